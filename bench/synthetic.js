// Seeded synthetic pairs with exact ground truth, shared by the accuracy benchmark (bench/accuracy.js)
// and the GOCor parameter fit (bench/fit-params.js): a crop of a gray source image and the same crop
// warped by a random homography, with photometric jitter and noise. Also the data folder and the
// scripts' argument helper.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const sharp = require('sharp');

// The workplace's shared data folder (../shared/data beside the repository).
const SHARED = path.join(__dirname, '..', '..', 'shared', 'data');
const DATA = fs.existsSync(SHARED) ? SHARED : '/work/shared/data';

// Command-line arguments and `arg(name, default)`: the value after `name`, or the default.
function cliArgs() {
  const args = process.argv.slice(2);
  const arg = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : dflt;
  };
  return { args, arg };
}

const SIZE = 384; // synthetic pair size (a crop of the source, so b has no artificial black border)
// Displacement levels: corner displacement up to mag x SIZE.
const LEVELS = [
  { name: 'small', mag: 0.04 },
  { name: 'medium', mag: 0.12 },
  { name: 'large', mag: 0.25 },
];

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

module.exports = { SIZE, LEVELS, DATA, cliArgs, mulberry32, loadGray, makePair };
