// Child process of ownership.test.ts: calls every public compute function once with inputs on the
// kind of buffer named by argv[2], does what argv[3] says to those buffers as soon as each call has
// returned its Promise, and prints one line of JSON: {name: sha1 of the result's arrays}.
//   node --expose-gc ownership-child.js plain|resizable|shared  none|shrink|transfer|nan
'use strict';
const crypto = require('node:crypto');
const g = require('../../dist/index.js');

const [kind, act] = process.argv.slice(2);

let seed = 1;
function rand() {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
}

const buffers = [];
// n floats on a buffer of the chosen kind, filled by `fill(i)`.
function f32(n, fill) {
  const bytes = 4 * n;
  const buf =
    kind === 'resizable'
      ? new ArrayBuffer(bytes, { maxByteLength: 2 * bytes })
      : kind === 'shared'
        ? new SharedArrayBuffer(bytes)
        : new ArrayBuffer(bytes);
  const a = new Float32Array(buf);
  for (let i = 0; i < n; i++) a[i] = fill(i);
  buffers.push(a);
  return a;
}

// Called with a call's Promise as soon as the call has returned it.
function after(pending) {
  for (const a of buffers.splice(0)) {
    if (act === 'nan') a.fill(Number.NaN);
    if (act === 'shrink') a.buffer.resize(0);
    if (act === 'transfer') structuredClone(a.buffer, { transfer: [a.buffer] });
  }
  if (global.gc) global.gc();
  return pending;
}

const fmap = (C, H, W) => ({ data: f32(C * H * W, () => rand() - 0.5), channels: C, height: H, width: W });
const image = (C, H, W) => ({
  data: f32(C * H * W, (i) => 0.5 + 0.4 * Math.sin(i * 0.37) * Math.cos(i * 0.011)),
  channels: C,
  height: H,
  width: W,
});
const flow = (H, W) => ({ data: f32(2 * H * W, (i) => Math.sin(i) * 3), width: W, height: H });

function hash(...arrays) {
  const h = crypto.createHash('sha1');
  for (const a of arrays) if (a) h.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  return h.digest('hex').slice(0, 16);
}

// Each case makes its inputs, starts one call and returns the promise of a hash.
const cases = {
  correlateGlobal: () => after(g.correlate(fmap(8, 12, 12), fmap(8, 10, 9))).then((r) => hash(r.data)),
  correlateLocal: () =>
    after(g.correlate(fmap(8, 12, 12), fmap(8, 12, 12), { mode: 'local', searchRadius: 3 })).then((r) => hash(r.data)),
  GlobalGOCor: () => {
    const p = g.defaultGlobalParams(8, 3);
    const params = {
      ...p,
      targetFg: f32(8, (i) => p.targetFg[i]),
      regWeight1: f32(p.regWeight1.length, (i) => p.regWeight1[i]),
    };
    const gocor = new g.GlobalGOCor({ params, numIter: 2 });
    return after(gocor.correlate(fmap(8, 10, 10), fmap(8, 10, 10), { returnFilter: true })).then((r) =>
      hash(r.data, r.filter),
    );
  },
  LocalGOCor: () =>
    after(new g.LocalGOCor({ numIter: 2 }).correlate(fmap(8, 12, 12), fmap(8, 12, 12))).then((r) => hash(r.data)),
  extractFeatures: () =>
    after(g.extractFeatures(image(3, 48, 64), { globalSize: 8 })).then((p) => hash(...p.levels.map((l) => l.data))),
  matchImages: () => after(g.match(image(1, 48, 64), image(1, 48, 64), { globalSize: 8 })).then((r) => hash(r.data)),
  matchPyramids: async () => {
    // Pyramids computed first, then copied onto buffers of the chosen kind.
    const [pa, pb] = await Promise.all([
      g.extractFeatures(
        { data: new Float32Array(48 * 64).map((_, i) => (i % 7) / 7), channels: 1, height: 48, width: 64 },
        { globalSize: 8 },
      ),
      g.extractFeatures(
        { data: new Float32Array(48 * 64).map((_, i) => (i % 5) / 5), channels: 1, height: 48, width: 64 },
        { globalSize: 8 },
      ),
    ]);
    const own = (p) => ({ ...p, levels: p.levels.map((l) => ({ ...l, data: f32(l.data.length, (i) => l.data[i]) })) });
    return after(g.match(own(pa), own(pb), { globalSize: 8 })).then((r) => hash(r.data));
  },
  matchFeatures: () =>
    after(g.matchFeatures(fmap(8, 24, 32), fmap(8, 24, 32), { globalSize: 8 })).then((r) => hash(r.data)),
  warpImage: () => after(g.warpImage(image(3, 20, 24), flow(16, 18))).then((r) => hash(r.data, r.valid)),
  resizeFlow: () => after(g.resizeFlow(flow(16, 18), { width: 40, height: 30 })).then((r) => hash(r.data)),
};

(async () => {
  const out = {};
  for (const [name, start] of Object.entries(cases)) {
    seed = 1;
    out[name] = await start().catch((e) => `error ${e.code}: ${e.message}`);
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
})();
