#!/usr/bin/env node
// Fits the GOCor parameters that `match` uses (`npm run fit -- --stage global|local`; needs
// `npm run build`).
//
// GOCor's parameters are learnt (spec 4.7, 5.6); the official values come from training with VGG
// / PWC-Net features and do not exist for gocor's hand-made descriptor. This script fits them, by
// coordinate search (each coordinate tried one step up and down, steps halved every sweep), on
// synthetic homography pairs made from pairs/basketball1-2 and pairs/rubberwhale1-2 (seeds 7000+).
// The synthetic sets of bench/accuracy.js do not use these images; its real pair
// mbflow_rubberwhale has the same frames, so that one real pair is not held out from the fit. Objectives, one per stage of `match`:
//  - global: fraction of global cells whose arg-max query cell lies within one cell of the truth;
//  - local: b's level features sampled at the true match plus a smooth random offset of up to 2.5
//    cells per axis (the error the local stage receives), fraction of cells whose read-out residual
//    (arg-max + parabola, as flow_from_local_volume) is within 0.5 cell of the true one; all local
//    levels of the pyramid.
// Prints the fitted values as C++ initialisers for cpp/core/match.cpp and writes them as JSON.
// Options: --stage global|local (default global), --pairs N (per level, default 30), --sweeps N
// (default 3), --iter K (default 3), --bias B (global: value of the constant channel, default 1 as
// match; 0: none), --no-query (global without the query-frame term), --from FILE
// (start from an earlier fit's JSON), --json FILE.
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const gocor = require('../dist');
const { LEVELS, DATA, cliArgs, mulberry32, loadGray, makePair } = require('./synthetic');

const { args, arg } = cliArgs();
const STAGE = arg('--stage', 'global');
const PAIRS = Number(arg('--pairs', 30));
const SWEEPS = Number(arg('--sweeps', 3));
const ITER = Number(arg('--iter', 3));
// global: the constant channel match appends to both global levels (cpp/core/match.cpp kGlobalBias);
// --bias 0 fits without it.
const BIAS = Number(arg('--bias', 1));
const QUERY = !args.includes('--no-query'); // global: the query-frame term (off: one step length per filter)
const TRAIN = ['basketball1.png', 'basketball2.png', 'rubberwhale1.png', 'rubberwhale2.png'];
const R = 4; // local search radius of match
const TOL = Number(arg('--tol', 0.5)); // local: residual tolerance in cells

// Bilinear sample of a (C, H, W) map at cell coordinates (x, y); zero outside (as flow_warp).
function sampleCells(map, x, y, out, o) {
  const { channels: C, height: H, width: W, data } = map;
  const x0 = Math.floor(x);
  const y0 = Math.floor(y);
  const fx = x - x0;
  const fy = y - y0;
  const P = H * W;
  for (let c = 0; c < C; c++) out[c * o.P + o.i] = 0;
  for (const [yy, xx, w] of [
    [y0, x0, (1 - fy) * (1 - fx)],
    [y0, x0 + 1, (1 - fy) * fx],
    [y0 + 1, x0, fy * (1 - fx)],
    [y0 + 1, x0 + 1, fy * fx],
  ]) {
    if (yy < 0 || xx < 0 || yy >= H || xx >= W || w === 0) continue;
    for (let c = 0; c < C; c++) out[c * o.P + o.i] += w * data[c * P + yy * W + xx];
  }
}

// The map with one more channel, constant BIAS, then every cell rescaled to unit norm.
function withBias(m) {
  const P = m.height * m.width;
  const data = new Float32Array((m.channels + 1) * P);
  data.set(m.data);
  data.fill(BIAS, m.channels * P);
  const k = 1 / Math.sqrt(1 + BIAS * BIAS);
  for (let i = 0; i < data.length; i++) data[i] *= k;
  return { ...m, channels: m.channels + 1, data };
}

const parabola = (l, c, r) => {
  const d = l - 2 * c + r;
  return d < 0 ? Math.max(-0.5, Math.min(0.5, (0.5 * (l - r)) / d)) : 0;
};

// Per pair: the global levels with, per reference cell, the true query cell; or, per local level,
// a's level, b's level sampled at the true match + a random offset, and the true residual.
async function trainingSet() {
  const sources = [];
  for (const f of TRAIN) sources.push(await loadGray(path.join(DATA, 'pairs', f)));
  const set = [];
  for (const [li, level] of LEVELS.entries()) {
    const rnd = mulberry32(7000 + li);
    const jitter = mulberry32(9000 + li);
    for (let p = 0; p < PAIRS; p++) {
      const pair = makePair(sources[p % sources.length], level.mag, rnd);
      const fa = await gocor.extractFeatures(pair.a);
      const fb = await gocor.extractFeatures(pair.b);
      const c = pair.a.width;
      const levels = STAGE === 'global' ? [0] : fa.levels.map((_, i) => i).slice(1);
      for (const l of levels) {
        const la = fa.levels[l];
        const lb = fb.levels[l];
        const P = la.height * la.width;
        const cells = [];
        const warped = new Float32Array(la.channels * P);
        // A smooth offset field (the error of the upsampled coarser flow is locally coherent):
        // a constant in [-2, 2] cells plus a ramp of +-0.5 cell across the map, per axis.
        const [cx, cy, rx, ry] = [4 * jitter() - 2, 4 * jitter() - 2, jitter() - 0.5, jitter() - 0.5];
        for (let r = 0; r < P; r++) {
          const px = Math.round(((r % la.width) + 0.5) * la.strideX - 0.5);
          const py = Math.round((Math.floor(r / la.width) + 0.5) * la.strideY - 0.5);
          const i = py * c + px;
          if (!pair.valid[i]) continue;
          const gx = (px + pair.gt.data[i] + 0.5) / lb.strideX - 0.5;
          const gy = (py + pair.gt.data[c * c + i] + 0.5) / lb.strideY - 0.5;
          if (STAGE === 'global') {
            cells.push([r, gx, gy]);
            continue;
          }
          const dx = cx + (rx * (r % la.width)) / la.width;
          const dy = cy + (ry * Math.floor(r / la.width)) / la.height;
          sampleCells(lb, gx + dx, gy + dy, warped, { P, i: r });
          cells.push([r, -dx, -dy]);
        }
        if (STAGE === 'global' && BIAS > 0) {
          set.push({ la: withBias(la), lb: withBias(lb), cells });
          continue;
        }
        set.push({ la, lb: STAGE === 'global' ? lb : { ...la, data: warped }, cells });
      }
    }
  }
  return set;
}

// Fraction of cells read out right from the volumes of one method (global: within one cell;
// local: residual within 0.5 cell).
async function score(set, volumeOf) {
  let ok = 0;
  let n = 0;
  for (const item of set) {
    const { la, lb, cells } = item;
    const v = await volumeOf(la, lb);
    const N = la.height * la.width;
    if (STAGE === 'global') {
      const M = lb.height * lb.width;
      for (const [r, gx, gy] of cells) {
        let best = 0;
        for (let t = 1; t < M; t++) if (v[t * N + r] > v[best * N + r]) best = t;
        n++;
        if (Math.abs((best % lb.width) - gx) <= 1 && Math.abs(Math.floor(best / lb.width) - gy) <= 1) ok++;
      }
      continue;
    }
    const S = 2 * R + 1;
    for (const [r, tx, ty] of cells) {
      let best = 0;
      for (let k = 1; k < S * S; k++) if (v[k * N + r] > v[best * N + r]) best = k;
      const by = Math.floor(best / S);
      const bx = best % S;
      const at = (y, x) => v[(y * S + x) * N + r];
      const fx = bx > 0 && bx < S - 1 ? parabola(at(by, bx - 1), at(by, bx), at(by, bx + 1)) : 0;
      const fy = by > 0 && by < S - 1 ? parabola(at(by - 1, bx), at(by, bx), at(by + 1, bx)) : 0;
      n++;
      if (Math.abs(bx - R + fx - tx) <= TOL && Math.abs(by - R + fy - ty) <= TOL) ok++;
    }
  }
  return ok / n;
}

function toParams(x, C) {
  const p = STAGE === 'global' ? gocor.defaultGlobalParams(C) : gocor.defaultLocalParams();
  p.weight = Float32Array.from(x.weight);
  p.label = Float32Array.from(x.label);
  p.maskLogit = Float32Array.from(x.maskLogit);
  p.filterReg = x.filterReg;
  p.logStepLength = x.logStepLength;
  return p;
}

function gocorVolumes(x, C) {
  const params = toParams(x, C);
  const g =
    STAGE === 'global'
      ? new gocor.GlobalGOCor({ numIter: ITER, applyQueryLoss: QUERY, params })
      : new gocor.LocalGOCor({ numIter: ITER, searchRadius: R, params });
  return async (la, lb) => (await g.correlate(la, lb)).data;
}

async function corrVolumes(la, lb) {
  return (await gocor.correlate(la, lb, STAGE === 'global' ? {} : { mode: 'local', searchRadius: R })).data;
}

async function main() {
  const set = await trainingSet();
  const C = set[0].la.channels;
  const d = STAGE === 'global' ? gocor.defaultGlobalParams(C) : gocor.defaultLocalParams();
  let x = {
    weight: Array.from(d.weight),
    label: Array.from(d.label),
    maskLogit: Array.from(d.maskLogit),
    filterReg: d.filterReg,
    logStepLength: d.logStepLength,
  };
  if (arg('--from')) x = JSON.parse(fs.readFileSync(arg('--from'), 'utf8')).x;
  const corr = await score(set, corrVolumes);
  const initial = await score(set, gocorVolumes(x, C));
  let best = initial;
  console.log(
    `${STAGE}: ${set.length} maps; correlation ${(100 * corr).toFixed(2)}%, GOCor start ${(100 * best).toFixed(2)}%`,
  );
  // Coordinates: key, index (arrays), step kind ('mul': positive values), first step, clamp.
  const coords = [];
  for (let k = 0; k < 10; k++) {
    coords.push({ key: 'weight', k, kind: 'mul', step: 2, lo: 0, hi: Infinity });
    coords.push({ key: 'maskLogit', k, kind: 'add', step: 2, lo: -Infinity, hi: Infinity });
    coords.push({ key: 'label', k, kind: 'add', step: 0.2, lo: -Infinity, hi: Infinity });
  }
  coords.push({ key: 'filterReg', kind: 'mul', step: 4, lo: 0, hi: Infinity });
  coords.push({ key: 'logStepLength', kind: 'add', step: 0.2, lo: -Infinity, hi: 0.3 });
  const get = (o, c) => (c.k === undefined ? o[c.key] : o[c.key][c.k]);
  const put = (o, c, v) => {
    const w = Math.min(c.hi, Math.max(c.lo, v));
    if (c.k === undefined) o[c.key] = w;
    else o[c.key][c.k] = w;
  };
  for (let s = 0; s < SWEEPS; s++) {
    const shrink = 2 ** s;
    for (const c of coords) {
      const v0 = get(x, c);
      const tries =
        c.kind === 'mul'
          ? [v0 * c.step ** (1 / shrink), v0 / c.step ** (1 / shrink)]
          : [v0 + c.step / shrink, v0 - c.step / shrink];
      for (const v of tries) {
        const y = structuredClone(x);
        put(y, c, v);
        const f = await score(set, gocorVolumes(y, C));
        if (f > best) {
          best = f;
          x = y;
          const name = c.k === undefined ? c.key : `${c.key}[${c.k}]`;
          console.log(`sweep ${s + 1} ${name} ${v0.toFixed(4)} -> ${get(x, c).toFixed(4)}: ${(100 * f).toFixed(2)}%`);
          break;
        }
      }
    }
  }
  console.log(
    `${STAGE} fitted: ${(100 * best).toFixed(2)}% (start ${(100 * initial).toFixed(2)}%, correlation ${(100 * corr).toFixed(2)}%)`,
  );
  const row = (a) => `{${a.map((v) => `${v.toPrecision(6)}f`).join(', ')}}`;
  console.log(`label ${row(x.label)}\nweight ${row(x.weight)}\nmaskLogit ${row(x.maskLogit)}`);
  console.log(`filterReg ${x.filterReg.toPrecision(6)} logStepLength ${x.logStepLength.toPrecision(6)}`);
  fs.writeFileSync(
    arg('--json', path.join(__dirname, `fit-${STAGE}.json`)),
    JSON.stringify({ stage: STAGE, best, initial, corr, x }, null, 1),
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
