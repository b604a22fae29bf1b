// Types for @birdfeeder/client/middleware (ESM; middleware.d.cts for CommonJS).
import { middleware, annotate, skip } from './index.js';

export { middleware, annotate, skip };
export type { Middleware, MiddlewareOptions, Annotation, AuthResult } from './index.js';

declare const birdfeederMiddleware: {
  middleware: typeof middleware;
  annotate: typeof annotate;
  skip: typeof skip;
};
export default birdfeederMiddleware;
