// Preloaded (node --require) by the queue test to run the CLI as on a machine where the optional
// peer dependency bullmq is not installed: resolving 'bullmq' fails as npm's absence would.
const Module = require('node:module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function resolveWithoutBullmq(request, ...rest) {
  if (request === 'bullmq' || request.startsWith('bullmq/')) {
    const err = new Error(`Cannot find module '${request}'`);
    err.code = 'MODULE_NOT_FOUND';
    throw err;
  }
  return resolve.call(this, request, ...rest);
};
