#!/usr/bin/env node
// Accuracy benchmark of gocor's dense matching (`npm run bench:accuracy`; needs `npm run build`).
// Synthetic pairs with exact ground truth: a seeded generator warps ../shared/data images by random
// homographies (small / medium / large displacement) with photometric jitter; plus the real stereo
// pair aloe. Methods: match({method:'gocor'}), match({method:'correlation'}), OpenCV Farneback
// (@techstark/opencv-js 4.12.0-release.1). Writes bench/accuracy-results.md.
// Options: --pairs N (per level, default 45), --quick (9 per level), --out FILE.
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const sharp = require('sharp');
const gocor = require('../dist');

const ROOT = path.join(__dirname, '..');
const DATA = fs.existsSync(path.join(ROOT, '..', 'shared', 'data'))
  ? path.join(ROOT, '..', 'shared', 'data')
  : '/work/shared/data';
const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const PAIRS = args.includes('--quick') ? 9 : Number(arg('--pairs', 45));
const OUT = arg('--out', path.join(__dirname, 'accuracy-results.md'));
const SIZE = 384; // synthetic pair size (a crop of the source, so b has no artificial black border)
const LEVELS = [
  { name: 'small', mag: 0.04 },
  { name: 'medium', mag: 0.12 },
  { name: 'large', mag: 0.25 },
];
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

function mulberry32(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Gray source scaled so that its short side is 512 (every source then has room for the crop + margin).
async function loadGray(file) {
  const meta = await sharp(file).metadata();
  const k = 512 / Math.min(meta.width, meta.height);
  const w = Math.round(meta.width * k);
  const h = Math.round(meta.height * k);
  const { data } = await sharp(file)
    .resize(w, h, { fit: 'fill' })
    .grayscale()
    .raw()
    .toBuffer({ resolveWithObject: true });
  const out = new Float32Array(w * h);
  for (let i = 0; i < out.length; i++) out[i] = data[i] / 255;
  return { data: out, width: w, height: h };
}

function solveHomography(src, dst) {
  // 8x8 linear system for h (h33 = 1), Gauss-Jordan with partial pivoting.
  const A = [];
  for (let i = 0; i < 4; i++) {
    const [x, y] = src[i];
    const [u, v] = dst[i];
    A.push([x, y, 1, 0, 0, 0, -u * x, -u * y, u]);
    A.push([0, 0, 0, x, y, 1, -v * x, -v * y, v]);
  }
  for (let c = 0; c < 8; c++) {
    let p = c;
    for (let r = c + 1; r < 8; r++) if (Math.abs(A[r][c]) > Math.abs(A[p][c])) p = r;
    [A[c], A[p]] = [A[p], A[c]];
    for (let r = 0; r < 8; r++) {
      if (r === c) continue;
      const f = A[r][c] / A[c][c];
      for (let k = c; k < 9; k++) A[r][k] -= f * A[c][k];
    }
  }
  return [...A.map((row, i) => row[8] / row[i]), 1];
}

const apply = (H, x, y) => {
  const w = H[6] * x + H[7] * y + H[8];
  return [(H[0] * x + H[1] * y + H[2]) / w, (H[3] * x + H[4] * y + H[5]) / w];
};

function sample(S, x, y) {
  if (x < 0 || y < 0 || x > S.width - 1 || y > S.height - 1) return -1;
  const x0 = Math.min(Math.floor(x), S.width - 2);
  const y0 = Math.min(Math.floor(y), S.height - 2);
  const fx = x - x0;
  const fy = y - y0;
  const p = (yy, xx) => S.data[yy * S.width + xx];
  return (
    (1 - fy) * ((1 - fx) * p(y0, x0) + fx * p(y0, x0 + 1)) + fy * ((1 - fx) * p(y0 + 1, x0) + fx * p(y0 + 1, x0 + 1))
  );
}

// a = centred SIZE crop of S; b(y) = S(Hinv(y) + offset) with photometric jitter; flow(x) = H(x) - x.
function makePair(S, mag, rnd) {
  const c = SIZE;
  const ox = Math.floor((S.width - c) / 2);
  const oy = Math.floor((S.height - c) / 2);
  const U = () => 2 * rnd() - 1;
  const src = [
    [0, 0],
    [c - 1, 0],
    [c - 1, c - 1],
    [0, c - 1],
  ];
  const tx = U() * 0.6 * mag * c;
  const ty = U() * 0.6 * mag * c;
  const dst = src.map(([x, y]) => [x + tx + U() * 0.4 * mag * c, y + ty + U() * 0.4 * mag * c]);
  const H = solveHomography(src, dst);
  const Hi = solveHomography(dst, src);
  const gain = 0.8 + 0.4 * rnd();
  const bias = 0.1 * rnd() - 0.05;
  const gamma = 0.85 + 0.3 * rnd();
  const a = new Float32Array(c * c);
  const b = new Float32Array(c * c);
  const inS = new Uint8Array(c * c);
  for (let y = 0; y < c; y++) {
    for (let x = 0; x < c; x++) {
      a[y * c + x] = S.data[(y + oy) * S.width + x + ox];
      const [sx, sy] = apply(Hi, x, y);
      const v = sample(S, sx + ox, sy + oy);
      inS[y * c + x] = v >= 0 ? 1 : 0;
      const noise = 0.01 * (rnd() + rnd() + rnd() - 1.5);
      b[y * c + x] = v < 0 ? 0 : Math.min(1, Math.max(0, gain * v ** gamma + bias + noise));
    }
  }
  const gt = new Float32Array(2 * c * c);
  const valid = new Uint8Array(c * c);
  for (let y = 0; y < c; y++) {
    for (let x = 0; x < c; x++) {
      const [u, v] = apply(H, x, y);
      gt[y * c + x] = u - x;
      gt[c * c + y * c + x] = v - y;
      const inside = u >= 0 && v >= 0 && u <= c - 1 && v <= c - 1;
      valid[y * c + x] = inside && inS[Math.round(v) * c + Math.round(u)] ? 1 : 0;
    }
  }
  return {
    a: { data: a, channels: 1, height: c, width: c },
    b: { data: b, channels: 1, height: c, width: c },
    gt: { data: gt, width: c, height: c },
    valid,
  };
}

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
  correlation: (a, b) => gocor.match(a, b, { method: 'correlation', confidence: 'none' }),
  farneback,
};
// --methods a,b: a subset (for quick iterations); the results file is written only with all three.
const METHODS = Object.fromEntries(
  Object.entries(ALL_METHODS).filter(([m]) => arg('--methods', 'gocor,correlation,farneback').split(',').includes(m)),
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
      'ground-truth match lies inside b. Methods use their defaults (gocor: globalSize 24, numIter 3/3, query term on; ' +
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
