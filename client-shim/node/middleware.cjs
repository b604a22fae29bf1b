'use strict';
// @birdfeeder/client/middleware (CommonJS): the request instrumentation
// alone. The same functions are exported by the package's main entry.
const { middleware, annotate, skip } = require('./lib/middleware.cjs');

module.exports = { middleware, annotate, skip };
module.exports.default = module.exports;
