// Child process of memory.test.ts: runs one call in a fresh process and prints
// {estimate, peak}: the native estimate the memory limit uses, and the growth of the peak resident
// set during the call (VmHWM reset through /proc/self/clear_refs just before it).
//   node --expose-gc memory-child.js <case>
'use strict';
const fs = require('node:fs');
const g = require('../../dist/index.js');
const { native } = require('../../dist/native.js');

function status(key) {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return Number(m[1]) * 1024;
}

const fm = (C, H, W) => ({
  data: new Float32Array(C * H * W).map((_, i) => Math.sin(i * 0.7)),
  channels: C,
  height: H,
  width: W,
});
const img = (H, W) => ({
  data: new Float32Array(H * W).map((_, i) => 0.5 + 0.3 * Math.sin(i * 0.05) * Math.cos(i * 0.0031)),
  channels: 1,
  height: H,
  width: W,
});
const exec = { device: 'cpu', threads: 0 };
// What match() sends natively with the default options ('balanced', lib/match.ts's PRESETS).
const matchDefaults = {
  ...exec,
  method: 'gocor',
  globalSize: 24,
  finestStride: 8,
  useGlobal: true,
  numIterGlobal: 3,
  numIterLocal: 7,
  applyQueryLoss: true,
  refineIter: 3,
  aggregateRadius: 2,
  fill: true,
  finalFill: true,
  dis: { coarsestScale: 3, patchSize: 8, patchStride: 2, gradIters: 16, varIters: 8 },
  texture: { radius: 4, gradient: 0.01 },
  median: true,
  seed: 0,
  fittedParams: true,
  outWidth: 0,
  outHeight: 0,
  confidence: 'peak',
};

// Each case: inputs, the estimate (same dims and options as the call), the call.
const cases = {
  correlateGlobal: () => {
    const a = fm(64, 96, 96);
    return {
      estimate: native().estimateBytes('corrGlobal', { B: 1, C: 64, H: 96, W: 96, Hq: 96, Wq: 96 }, exec),
      run: () => g.correlate(a, a, { device: 'cpu' }),
    };
  },
  GlobalGOCor: () => {
    const a = fm(4, 64, 64);
    const opts = { ...exec, numIter: 3, applyQueryLoss: true, diagnostics: false, returnFilter: false };
    return {
      estimate: native().estimateBytes('gocorGlobal', { B: 1, C: 4, H: 64, W: 64 }, opts),
      run: () => new g.GlobalGOCor({ device: 'cpu' }).correlate(a, a),
    };
  },
  LocalGOCor: () => {
    const a = fm(64, 256, 256);
    const opts = { ...exec, numIter: 3, searchRadius: 4, diagnostics: false, returnFilter: false };
    return {
      estimate: native().estimateBytes('gocorLocal', { B: 1, C: 64, H: 256, W: 256 }, opts),
      run: () => new g.LocalGOCor({ device: 'cpu' }).correlate(a, a),
    };
  },
  extractFeatures: () => {
    const a = img(1024, 1024);
    const opts = { ...exec, globalSize: 24, finestStride: 4, coarsestStride: 0, withGlobal: true };
    return {
      estimate: native().estimateBytes('extractFeatures', { C: 1, H: 1024, W: 1024 }, opts),
      run: () => g.extractFeatures(a, { device: 'cpu' }),
    };
  },
  match: () => {
    const a = img(768, 1024);
    const d = { C: 1, H: 768, W: 1024 };
    return {
      estimate: native().estimateBytes('matchImages', { a: d, b: d }, matchDefaults),
      run: () => g.match(a, a, { device: 'cpu' }),
    };
  },
  matchOutputShape: () => {
    const a = img(96, 128);
    const d = { C: 1, H: 96, W: 128 };
    return {
      estimate: native().estimateBytes(
        'matchImages',
        { a: d, b: d },
        { ...matchDefaults, outWidth: 4096, outHeight: 4096 },
      ),
      run: () => g.match(a, a, { device: 'cpu', outputShape: { width: 4096, height: 4096 } }),
    };
  },
};

(async () => {
  const c = cases[process.argv[2]]();
  global.gc();
  const before = status('VmRSS');
  fs.writeFileSync('/proc/self/clear_refs', '5');
  const result = await c.run();
  const peak = status('VmHWM') - before;
  process.stdout.write(`${JSON.stringify({ estimate: c.estimate, peak, device: result.device ?? 'cpu' })}\n`);
})();
