// Types for @birdfeeder/client/middleware (CommonJS; middleware.d.ts for ESM).
import { middleware, annotate, skip } from './index.cjs';

export { middleware, annotate, skip };
export type { Middleware, MiddlewareOptions, Annotation, AuthResult } from './index.cjs';

declare const birdfeederMiddleware: {
  middleware: typeof middleware;
  annotate: typeof annotate;
  skip: typeof skip;
};
export default birdfeederMiddleware;
