// Seeded synthetic pairs with exact ground truth, shared by the accuracy benchmark (bench/accuracy.js)
// and the GOCor parameter fit (bench/fit-params.js), and what both need around them:
//  - makePair: a crop of a gray source image and the same crop warped by a random homography, with
//    photometric jitter and noise (the fit's training pairs; the benchmark's `--only homography`);
//  - makeChairsPair: Flying-Chairs-style RGB pairs, a background under a smooth homography with 2-4
//    textured foreground layers, each under its own affine motion, so the pairs have occlusions and
//    independent motions; the flow of a is exact at every pixel, occluded ones included;
//  - flowScore (AEPE, PCK-1/3/5), writePng, the data folder and the scripts' argument helper.
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

// The pair of a warp: a = the SIZE crop of S at (ox, oy); b(y) = readB(y) (S's value read through
// the inverse warp, -1 outside S: black) with photometric jitter (gain, bias, gamma) and noise;
// flow(x) = forward(x) - x, valid where forward(x) lies in b and b reads S there.
function warpedPair(S, ox, oy, readB, forward, rnd) {
  const c = SIZE;
  const gain = 0.8 + 0.4 * rnd();
  const bias = 0.1 * rnd() - 0.05;
  const gamma = 0.85 + 0.3 * rnd();
  const a = new Float32Array(c * c);
  const b = new Float32Array(c * c);
  const inS = new Uint8Array(c * c);
  for (let y = 0; y < c; y++) {
    for (let x = 0; x < c; x++) {
      a[y * c + x] = S.data[(y + oy) * S.width + x + ox];
      const v = readB(x, y);
      inS[y * c + x] = v >= 0 ? 1 : 0;
      const noise = 0.01 * (rnd() + rnd() + rnd() - 1.5);
      b[y * c + x] = v < 0 ? 0 : Math.min(1, Math.max(0, gain * v ** gamma + bias + noise));
    }
  }
  const gt = new Float32Array(2 * c * c);
  const valid = new Uint8Array(c * c);
  for (let y = 0; y < c; y++) {
    for (let x = 0; x < c; x++) {
      const [u, v] = forward(x, y);
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
  return warpedPair(
    S,
    ox,
    oy,
    (x, y) => {
      const [sx, sy] = apply(Hi, x, y);
      return sample(S, sx + ox, sy + oy);
    },
    (x, y) => apply(H, x, y),
    rnd,
  );
}

// ---- Similarity pairs: large rotations and zooms (the Oxford bark/boat kind) ----

// Rotation (degrees) and zoom ranges of the `similarity` set: b is a rotated by 30..180 degrees
// (either sign) and zoomed by 1.5..3 (in or out, log-uniform), about a random point near the centre.
const SIMILARITY = { minRotation: 30, maxRotation: 180, minZoom: 1.5, maxZoom: 3 };

// a = centred SIZE crop of the gray source S; b(y) = S(offset + M^-1(y)) with M(x) = zoom Rot(angle)
// (x - c) + c + shift, the similarity a -> b, b's pixels outside S black; flow(x) = M(x) - x, valid
// where M(x) lies in b and reads S. Photometric jitter and noise as in makePair. `angle` in degrees.
function makeSimilarityPair(S, angle, zoom, rnd) {
  const c = SIZE;
  const ox = Math.floor((S.width - c) / 2);
  const oy = Math.floor((S.height - c) / 2);
  const th = (angle * Math.PI) / 180;
  const ca = zoom * Math.cos(th);
  const sa = zoom * Math.sin(th);
  const cc = (c - 1) / 2;
  const sx = (2 * rnd() - 1) * 0.1 * c;
  const sy = (2 * rnd() - 1) * 0.1 * c;
  const M = (x, y) => [ca * (x - cc) - sa * (y - cc) + cc + sx, sa * (x - cc) + ca * (y - cc) + cc + sy];
  const Mi = (u, v) => {
    const x = u - cc - sx;
    const y = v - cc - sy;
    const k = zoom * zoom;
    return [(ca * x + sa * y) / k + cc, (-sa * x + ca * y) / k + cc];
  };
  // zooming out of S: b averages a zoom x zoom footprint per pixel (a photo, not a point sample)
  const n = zoom < 1 ? Math.ceil(1 / zoom) : 1;
  const readB = (x, y) => {
    let v = 0;
    for (let j = 0; j < n; j++) {
      for (let i = 0; i < n; i++) {
        const [qx, qy] = Mi(x + (i + 0.5) / n - 0.5, y + (j + 0.5) / n - 0.5);
        const s = sample(S, qx + ox, qy + oy);
        if (s < 0) return -1;
        v += s / (n * n);
      }
    }
    return v;
  };
  return warpedPair(S, ox, oy, readB, M, rnd);
}

// A random similarity of the `similarity` set: [angle (degrees), zoom].
function randomSimilarity(rnd) {
  const { minRotation, maxRotation, minZoom, maxZoom } = SIMILARITY;
  const angle = (minRotation + (maxRotation - minRotation) * rnd()) * (rnd() < 0.5 ? -1 : 1);
  const zoom = Math.exp(Math.log(minZoom) + (Math.log(maxZoom) - Math.log(minZoom)) * rnd());
  return [angle, rnd() < 0.5 ? zoom : 1 / zoom];
}

// ---- Flying-Chairs-style pairs: layers with their own motions over a moving background ----

const CHAIRS_SIZE = 384;
// Sources (relative to DATA): each pair takes one as the background, the others texture its layers.
const CHAIRS_SOURCES = [
  'cc0/astronaut.png',
  'cc0/coffee.png',
  'cc0/chelsea.png',
  'cc0/camera.png',
  'cc0/rocket.jpg',
  'cc0/brick.png',
  'cc0/grass.png',
  'cc0/gravel.png',
  'pairs/building.jpg',
  'pairs/basketball1.png',
];
// Displacement levels. Background: translation up to bgShift px plus corner jitter up to bgWarp px
// (a homography). Layers: translation up to fgShift px, rotation up to fgRot rad and scale change up
// to fgScale about the layer's centre (an affine motion in image coordinates).
const CHAIRS_LEVELS = [
  { name: 'chairs-small', bgShift: 5, bgWarp: 3, fgShift: 10, fgRot: 0.08, fgScale: 0.05 },
  { name: 'chairs-large', bgShift: 24, bgWarp: 10, fgShift: 45, fgRot: 0.2, fgScale: 0.12 },
];
const LAYER_RADIUS = 110; // largest extent of a layer's shape from its centre (px)

// RGB source scaled so that its short side is minSide: { data [3, H, W] in [0, 1], channels, height, width }.
async function loadRgb(file, minSide) {
  const meta = await sharp(file).metadata();
  const k = minSide / Math.min(meta.width, meta.height);
  const w = Math.round(meta.width * k);
  const h = Math.round(meta.height * k);
  const { data } = await sharp(file)
    .resize(w, h, { fit: 'fill' })
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  const P = w * h;
  const out = new Float32Array(3 * P);
  for (let p = 0; p < P; p++) for (let c = 0; c < 3; c++) out[c * P + p] = data[3 * p + c] / 255;
  return { data: out, channels: 3, height: h, width: w };
}

// Bilinear RGB sample of S ([3, H, W]) at (x, y), clamped to the border, into out[0..2].
function sampleRgb(S, x, y, out) {
  const { width: W, height: H, data } = S;
  const cx = Math.min(W - 1, Math.max(0, x));
  const cy = Math.min(H - 1, Math.max(0, y));
  const x0 = Math.min(Math.floor(cx), W - 2);
  const y0 = Math.min(Math.floor(cy), H - 2);
  const fx = cx - x0;
  const fy = cy - y0;
  const i = y0 * W + x0;
  const P = W * H;
  for (let c = 0; c < 3; c++) {
    const o = c * P + i;
    out[c] = (1 - fy) * ((1 - fx) * data[o] + fx * data[o + 1]) + fy * ((1 - fx) * data[o + W] + fx * data[o + W + 1]);
  }
}

// A random shape around the origin: an ellipse or a star-shaped polygon of 5-9 vertices.
function randomShape(rnd) {
  if (rnd() < 0.5) {
    const rx = 35 + 70 * rnd();
    const ry = 35 + 70 * rnd();
    const phi = Math.PI * rnd();
    const c = Math.cos(phi);
    const s = Math.sin(phi);
    return (px, py) => ((c * px + s * py) / rx) ** 2 + ((c * py - s * px) / ry) ** 2 <= 1;
  }
  const n = 5 + Math.floor(5 * rnd());
  const R = 50 + 60 * rnd();
  const start = 2 * Math.PI * rnd();
  const vx = [];
  const vy = [];
  for (let k = 0; k < n; k++) {
    const ang = start + ((k + 0.3 + 0.4 * rnd()) * 2 * Math.PI) / n;
    const r = R * (0.45 + 0.55 * rnd());
    vx.push(r * Math.cos(ang));
    vy.push(r * Math.sin(ang));
  }
  return (px, py) => {
    if (px * px + py * py > R * R) return false;
    let inside = false;
    for (let k = 0, j = n - 1; k < n; j = k++) {
      if (vy[k] > py !== vy[j] > py && px < ((vx[j] - vx[k]) * (py - vy[k])) / (vy[j] - vy[k]) + vx[k])
        inside = !inside;
    }
    return inside;
  };
}

/**
 * One Flying-Chairs-style pair from `bg` and `textures` (loadRgb images; bg's short side >= 640, the
 * textures' >= 2 * LAYER_RADIUS + 10), with level's motion magnitudes and the random source `rnd`.
 * a = the centred CHAIRS_SIZE crop of bg with 2-4 layers pasted (later ones in front); b = the same
 * scene after the background's homography and each layer's affine motion, with gain/bias jitter;
 * both with a little noise. Returns { a, b } (Images [3, S, S] in [0, 1]), gt (Flow [2, S, S]: at
 * each pixel of a, the motion of the surface seen there), occluded ([S, S], 1 where that point is
 * hidden in b by a layer in front or leaves b's frame), layers (count).
 */
function makeChairsPair(bg, textures, level, rnd) {
  const S = CHAIRS_SIZE;
  const N = S * S;
  const U = () => 2 * rnd() - 1;
  const ox = (bg.width - S) / 2;
  const oy = (bg.height - S) / 2;
  const corners = [
    [0, 0],
    [S - 1, 0],
    [S - 1, S - 1],
    [0, S - 1],
  ];
  const tx = U() * level.bgShift;
  const ty = U() * level.bgShift;
  const H = solveHomography(
    corners,
    corners.map(([x, y]) => [x + tx + U() * level.bgWarp, y + ty + U() * level.bgWarp]),
  );
  const Hi = solveHomography(
    corners.map(([x, y]) => apply(H, x, y)),
    corners,
  );
  const layers = [];
  const count = 2 + Math.floor(3 * rnd());
  for (let k = 0; k < count; k++) {
    const tex = textures[Math.floor(rnd() * textures.length)];
    const m = LAYER_RADIUS + 5;
    const theta = U() * level.fgRot;
    const s = 1 + U() * level.fgScale;
    layers.push({
      tex,
      inside: randomShape(rnd),
      cx: 40 + (S - 80) * rnd(),
      cy: 40 + (S - 80) * rnd(),
      tox: m + (tex.width - 2 * m) * rnd(),
      toy: m + (tex.height - 2 * m) * rnd(),
      tx: U() * level.fgShift,
      ty: U() * level.fgShift,
      a11: s * Math.cos(theta),
      a21: s * Math.sin(theta),
    });
  }
  // Layer coordinates p (origin at the layer's centre in a): in a x = c + p; in b y = c + t + s R p.
  const toLayerA = (L, x, y) => [x - L.cx, y - L.cy];
  const toLayerB = (L, x, y) => {
    const dx = x - L.cx - L.tx;
    const dy = y - L.cy - L.ty;
    const d = L.a11 * L.a11 + L.a21 * L.a21;
    return [(L.a11 * dx + L.a21 * dy) / d, (L.a11 * dy - L.a21 * dx) / d];
  };
  const render = (toLayer, toBg, gain, bias) => {
    const img = new Float32Array(3 * N);
    const id = new Uint8Array(N);
    const rgb = [0, 0, 0];
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const i = y * S + x;
        let k = count - 1;
        for (; k >= 0; k--) {
          const L = layers[k];
          const [px, py] = toLayer(L, x, y);
          if (L.inside(px, py)) {
            sampleRgb(L.tex, px + L.tox, py + L.toy, rgb);
            break;
          }
        }
        if (k < 0) {
          const [bx, by] = toBg(x, y);
          sampleRgb(bg, bx + ox, by + oy, rgb);
        }
        id[i] = k + 1;
        for (let c = 0; c < 3; c++) {
          const noise = 0.008 * (rnd() + rnd() + rnd() - 1.5);
          img[c * N + i] = Math.min(1, Math.max(0, gain * rgb[c] + bias + noise));
        }
      }
    }
    return { img, id };
  };
  const A = render(toLayerA, (x, y) => [x, y], 1, 0);
  const B = render(toLayerB, (x, y) => apply(Hi, x, y), 0.9 + 0.2 * rnd(), 0.06 * rnd() - 0.03);
  const gt = new Float32Array(2 * N);
  const occluded = new Uint8Array(N);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const i = y * S + x;
      const k = A.id[i];
      let u;
      let v;
      if (k === 0) [u, v] = apply(H, x, y);
      else {
        const L = layers[k - 1];
        u = L.cx + L.tx + L.a11 * (x - L.cx) - L.a21 * (y - L.cy);
        v = L.cy + L.ty + L.a21 * (x - L.cx) + L.a11 * (y - L.cy);
      }
      gt[i] = u - x;
      gt[N + i] = v - y;
      const ru = Math.round(u);
      const rv = Math.round(v);
      // The surface k lands at (u, v) in b; it is hidden there when a layer in front of it covers that pixel.
      occluded[i] = ru < 0 || rv < 0 || ru >= S || rv >= S || B.id[rv * S + ru] > k ? 1 : 0;
    }
  }
  return {
    a: { data: A.img, channels: 3, height: S, width: S },
    b: { data: B.img, channels: 3, height: S, width: S },
    gt: { data: gt, width: S, height: S },
    occluded,
    layers: count,
  };
}

/**
 * The chairs set: per level, `pairs` pairs (seed 5000 + 100 * level + pair, so the first pairs of a
 * short run are those of a long one); background i cycles through CHAIRS_SOURCES, the layers take
 * their textures from the other sources. Yields { level, index, source, pair } one at a time.
 */
async function* chairsSet(pairs, levels = CHAIRS_LEVELS) {
  const bgs = [];
  const texs = [];
  for (const rel of CHAIRS_SOURCES) {
    bgs.push(await loadRgb(path.join(DATA, rel), 640));
    texs.push(await loadRgb(path.join(DATA, rel), 2 * LAYER_RADIUS + 40));
  }
  for (const level of levels) {
    const li = CHAIRS_LEVELS.indexOf(level);
    for (let p = 0; p < pairs; p++) {
      const rnd = mulberry32(5000 + 100 * li + p);
      const s = (p + 3 * li) % CHAIRS_SOURCES.length;
      const pair = makeChairsPair(
        bgs[s],
        texs.filter((_, j) => j !== s),
        level,
        rnd,
      );
      yield { level: level.name, index: p, source: path.basename(CHAIRS_SOURCES[s]).replace(/\..*$/, ''), pair };
    }
  }
}

/**
 * Endpoint-error scores of `flow` against `gt` (Flows [2, H, W]) over the pixels where `mask` ([H, W],
 * optional) is non-zero and the ground truth is known (finite, |u|, |v| <= 1e9): AEPE, and PCK-1/3/5
 * = fraction with error strictly below 1, 3, 5 px. { aepe, pck1, pck3, pck5, count }; NaN when count is 0.
 * Not gocor.flowMetrics, which counts errors <= 1, 3, 5: with integer ground truth (Tsukuba's
 * disparity is 5 px on 58% of its pixels) a zero flow would score PCK-5 57.8% there.
 */
function flowScore(flow, gt, mask) {
  const n = gt.width * gt.height;
  if (flow.width !== gt.width || flow.height !== gt.height) {
    throw new Error(`flow is ${flow.width}x${flow.height} but gt is ${gt.width}x${gt.height}`);
  }
  const errors = [];
  for (let i = 0; i < n; i++) {
    const gu = gt.data[i];
    const gv = gt.data[n + i];
    const known = Math.abs(gu) <= 1e9 && Math.abs(gv) <= 1e9;
    if (known && (!mask || mask[i])) errors.push(Math.hypot(flow.data[i] - gu, flow.data[n + i] - gv));
  }
  const count = errors.length;
  const below = (t) => (count ? errors.filter((e) => e < t).length / count : Number.NaN);
  const aepe = count ? errors.reduce((s, e) => s + e, 0) / count : Number.NaN;
  return { aepe, pck1: below(1), pck3: below(3), pck5: below(5), count };
}

// Writes an Image ([C, H, W] in [0, 1], C = 1 or 3) as an 8-bit PNG.
async function writePng(img, file) {
  const { channels: C, height: H, width: W, data } = img;
  const P = H * W;
  const buf = Buffer.alloc(C * P);
  for (let p = 0; p < P; p++) {
    for (let c = 0; c < C; c++) buf[p * C + c] = Math.round(255 * Math.min(1, Math.max(0, data[c * P + p])));
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp(buf, { raw: { width: W, height: H, channels: C } })
    .png()
    .toFile(file);
}

module.exports = {
  SIZE,
  LEVELS,
  DATA,
  CHAIRS_SIZE,
  CHAIRS_LEVELS,
  CHAIRS_SOURCES,
  cliArgs,
  mulberry32,
  loadGray,
  loadRgb,
  makePair,
  SIMILARITY,
  makeSimilarityPair,
  randomSimilarity,
  makeChairsPair,
  chairsSet,
  flowScore,
  writePng,
};
