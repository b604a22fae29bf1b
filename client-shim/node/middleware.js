// @birdfeeder/client/middleware (ESM): re-exports middleware.cjs.
import cjs from './middleware.cjs';

export const { middleware, annotate, skip } = cjs;
export default cjs;
