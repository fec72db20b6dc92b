#!/usr/bin/env node
// Accuracy benchmark of gocor's dense matching (`npm run bench:accuracy`; needs `npm run build`).
// Synthetic pairs with exact ground truth: a seeded generator warps ../shared/data images by random
// homographies (small / medium / large displacement) with photometric jitter; plus the real stereo
// pair aloe. Methods: match({method:'gocor'}), match({method:'correlation'}), OpenCV Farneback
// (@techstark/opencv-js 4.12.0-release.1); also match({gocorParams:'initial'}) (untrained GOCor).
// Writes bench/accuracy-results.md.
// Options: --pairs N (per level, default 45), --quick (9 per level), --out FILE.
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const sharp = require('sharp');
const gocor = require('../dist');
const { SIZE, LEVELS, DATA, cliArgs, mulberry32, loadGray, makePair } = require('./synthetic');

const { args, arg } = cliArgs();
const PAIRS = args.includes('--quick') ? 9 : Number(arg('--pairs', 45));
const OUT = arg('--out', path.join(__dirname, 'accuracy-results.md'));
const SOURCES = [
  ['astronaut', 'cc0/astronaut.png'],
  ['brick', 'cc0/brick.png'],
  ['camera', 'cc0/camera.png'],
  ['chelsea', 'cc0/chelsea.png'],
  ['coffee', 'cc0/coffee.png'],
  ['grass', 'cc0/grass.png'],
  ['gravel', 'cc0/gravel.png'],
  ['rocket', 'cc0/rocket.jpg'],
  ['building', 'pairs/building.jpg'],
];
const REPETITIVE = new Set(['brick', 'grass', 'gravel', 'building']);

let cvPromise;
function opencv() {
  if (!cvPromise) {
    // The emscripten module is a thenable: resolve with a wrapper, never with the module itself.
    cvPromise = new Promise((resolve) => {
      const cv = require('@techstark/opencv-js');
      if (cv.Mat) resolve({ cv });
      else cv.onRuntimeInitialized = () => resolve({ cv });
    });
  }
  return cvPromise;
}

// OpenCV Farneback, flow from a to b (same convention). Parameters for large motion: 5 pyramid
// levels, 21 px window (OpenCV's sample uses 3 levels / 15 px; more levels help the large level).
async function farneback(a, b) {
  const { cv } = await opencv();
  const toMat = (img) => {
    const m = new cv.Mat(img.height, img.width, cv.CV_8UC1);
    for (let i = 0; i < img.data.length; i++) m.data[i] = Math.round(255 * Math.min(1, Math.max(0, img.data[i])));
    return m;
  };
  const ma = toMat(a);
  const mb = toMat(b);
  const flow = new cv.Mat();
  cv.calcOpticalFlowFarneback(ma, mb, flow, 0.5, 5, 21, 5, 7, 1.5, 0);
  const n = a.width * a.height;
  const f = flow.data32F;
  const data = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    data[i] = f[2 * i];
    data[n + i] = f[2 * i + 1];
  }
  ma.delete();
  mb.delete();
  flow.delete();
  return { data, width: a.width, height: a.height };
}

const ALL_METHODS = {
  gocor: (a, b) => gocor.match(a, b, { method: 'gocor', confidence: 'none' }),
  // Untrained GOCor (the spec's initial parameters): shows what the fit (bench/fit-params.js) adds.
  'gocor-initial': (a, b) => gocor.match(a, b, { method: 'gocor', gocorParams: 'initial', confidence: 'none' }),
  correlation: (a, b) => gocor.match(a, b, { method: 'correlation', confidence: 'none' }),
  farneback,
};
// --methods a,b: a subset (for quick iterations); the results file is written only with all of them.
const METHODS = Object.fromEntries(
  Object.entries(ALL_METHODS).filter(([m]) =>
    arg('--methods', Object.keys(ALL_METHODS).join(',')).split(',').includes(m),
  ),
);

function newAcc() {
  return { aepe: 0, pck1: 0, pck3: 0, pck5: 0, n: 0, time: 0 };
}
function add(acc, m, t) {
  acc.aepe += m.aepe;
  acc.pck1 += m.pck1;
  acc.pck3 += m.pck3;
  acc.pck5 += m.pck5;
  acc.time += t;
  acc.n++;
}
const fmt = (acc) =>
  `${(acc.aepe / acc.n).toFixed(2)} | ${((100 * acc.pck1) / acc.n).toFixed(1)} | ${((100 * acc.pck3) / acc.n).toFixed(1)} | ${(
    (100 * acc.pck5) / acc.n
  ).toFixed(1)} | ${((1000 * acc.time) / acc.n).toFixed(0)}`;

async function timed(fn) {
  const t0 = process.hrtime.bigint();
  const r = await fn();
  return [r, Number(process.hrtime.bigint() - t0) / 1e9];
}

async function aloe() {
  // Half resolution (641 x 555): d / 2, flow = (-d/2, 0) on the left image, 0 = unknown.
  const w = 641;
  const h = 555;
  const load = async (f) => {
    const { data } = await sharp(path.join(DATA, 'pairs', f))
      .resize(w, h, { fit: 'fill' })
      .grayscale()
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { data: Float32Array.from(data, (v) => v / 255), channels: 1, height: h, width: w };
  };
  const a = await load('aloeL.jpg');
  const b = await load('aloeR.jpg');
  const gtRaw = await sharp(path.join(DATA, 'pairs', 'aloeGT.png'))
    .grayscale()
    .raw()
    .toBuffer({ resolveWithObject: true });
  const GW = gtRaw.info.width;
  const gt = new Float32Array(2 * w * h);
  const valid = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const d = gtRaw.data[Math.min(gtRaw.info.height - 1, 2 * y) * GW + Math.min(GW - 1, 2 * x)];
      gt[y * w + x] = -d / 2;
      valid[y * w + x] = d > 0 ? 1 : 0;
    }
  }
  return { a, b, gt: { data: gt, width: w, height: h }, valid };
}

async function main() {
  const sources = [];
  for (const [name, rel] of SOURCES) sources.push({ name, img: await loadGray(path.join(DATA, rel)) });
  const byLevel = {};
  const byImage = {};
  for (const m of Object.keys(METHODS)) {
    byLevel[m] = {};
    byImage[m] = {};
  }
  for (const [li, level] of LEVELS.entries()) {
    const rnd = mulberry32(1000 + li);
    for (let p = 0; p < PAIRS; p++) {
      const src = sources[p % sources.length];
      const pair = makePair(src.img, level.mag, rnd);
      for (const [m, fn] of Object.entries(METHODS)) {
        const [flow, t] = await timed(() => fn(pair.a, pair.b));
        const metrics = gocor.flowMetrics(flow, pair.gt, pair.valid);
        byLevel[m][level.name] ??= newAcc();
        add(byLevel[m][level.name], metrics, t);
        byImage[m][src.name] ??= newAcc();
        add(byImage[m][src.name], metrics, t);
      }
      process.stderr.write(`\r${level.name} ${p + 1}/${PAIRS}   `);
    }
  }
  process.stderr.write('\n');
  const real = await aloe();
  const aloeRes = {};
  for (const [m, fn] of Object.entries(METHODS)) {
    const [flow, t] = await timed(() => fn(real.a, real.b));
    aloeRes[m] = newAcc();
    add(aloeRes[m], gocor.flowMetrics(flow, real.gt, real.valid), t);
  }
  // Speed at 512 x 512 (RGB file decode excluded), all threads, median of 5.
  const img512 = await gocor.loadImage(path.join(DATA, 'cc0', 'astronaut.png'));
  const img512b = await gocor.loadImage(path.join(DATA, 'cc0', 'astronaut.png'), {
    resize: { width: 512, height: 512 },
  });
  const speed = {};
  for (const m of ['gocor', 'correlation'].filter((k) => METHODS[k])) {
    const ts = [];
    for (let i = 0; i < 5; i++) ts.push((await timed(() => METHODS[m](img512, img512b)))[1]);
    ts.sort((x, y) => x - y);
    speed[m] = ts[2];
  }

  const lines = [];
  const methods = Object.keys(METHODS);
  const header =
    '| method | AEPE (px) | PCK-1 (%) | PCK-3 (%) | PCK-5 (%) | time/pair (ms) |\n|---|---|---|---|---|---|';
  lines.push('# Accuracy benchmark results', '');
  lines.push(
    `Generated by \`npm run bench:accuracy\` on ${new Date().toISOString().slice(0, 10)}: ${os.cpus()[0]?.model ?? 'cpu'}, ` +
      `${os.availableParallelism?.() ?? os.cpus().length} threads, Node ${process.version}, gocor ${gocor.version()} (CPU backend ` +
      `${gocor.backends().cpu.simd}). Synthetic pairs: ${SIZE}x${SIZE} gray, ${PAIRS} per level, seeded homographies ` +
      '(corner displacement up to 4% / 12% / 25% of the size), gain/gamma/bias jitter and noise; metrics over pixels whose ' +
      'ground-truth match lies inside b. Methods use their defaults (gocor: globalSize 24, numIter 3 global / 7 local, query term on, ' +
      "global parameters fitted by bench/fit-params.js on other images; gocor-initial: the same with the spec's initial parameters; " +
      'Farneback: pyrScale 0.5, 5 levels, window 21, 5 iterations, polyN 7, polySigma 1.5). Time per pair is wall time of the call ' +
      'on a shared 2-core machine.',
    '',
  );
  for (const level of LEVELS) {
    lines.push(
      `## Synthetic homographies, ${level.name} displacement (<= ${Math.round(level.mag * 100)}% of size)`,
      '',
      header,
    );
    for (const m of methods) lines.push(`| ${m} | ${fmt(byLevel[m][level.name])} |`);
    lines.push('');
  }
  lines.push(
    '## Per source image (all levels)',
    '',
    `| image | ${methods.map((m) => `${m} AEPE / PCK-5`).join(' | ')} |`,
  );
  lines.push(`|---|${methods.map(() => '---').join('|')}|`);
  for (const { name } of sources.filter((s) => byImage[methods[0]][s.name])) {
    const cells = methods.map((m) => {
      const a = byImage[m][name];
      return `${(a.aepe / a.n).toFixed(2)} / ${((100 * a.pck5) / a.n).toFixed(1)}`;
    });
    lines.push(`| ${name}${REPETITIVE.has(name) ? ' (repetitive)' : ''} | ${cells.join(' | ')} |`);
  }
  lines.push('', '## Real stereo pair: aloe (Middlebury 2006), half resolution 641x555, flow = (-d/2, 0)', '', header);
  for (const m of methods) lines.push(`| ${m} | ${fmt(aloeRes[m])} |`);
  lines.push('', '## Speed, 512x512 RGB pair (astronaut), all threads, median of 5', '');
  for (const m of Object.keys(speed)) lines.push(`- ${m}: ${(1000 * speed[m]).toFixed(0)} ms`);
  lines.push('');
  if (Object.keys(METHODS).length === Object.keys(ALL_METHODS).length) fs.writeFileSync(OUT, lines.join('\n'));
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
