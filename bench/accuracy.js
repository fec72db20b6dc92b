#!/usr/bin/env node
// Accuracy benchmark of gocor's `match` against classical optical flow (`npm run bench:accuracy`;
// needs the built addon and dist/). Issue 12.
//
// Pairs, each with exact ground truth:
//  - real: the 18 pairs of ../shared/data/real (Middlebury flow and stereo, MPI-Sintel, KITTI 2012,
//    ETH3D, Oxford homographies; read in place, never copied) and the Middlebury 2006 aloe stereo
//    pair at full resolution (1282x1110, flow = (-d, 0));
//  - synthetic "chairs": Flying-Chairs-style pairs (bench/synthetic.js makeChairsPair): a background
//    under a random homography with 2-4 textured layers, each under its own affine motion, so there
//    are occlusions and independent motions; two displacement levels. The set to tune on;
//  - homography (only with --only homography): the earlier single-homography synthetic levels;
//  - similarity (only with --only similarity): a cc0 crop and the same view rotated by 30-180 degrees
//    and zoomed 1.5-3x in or out (bench/synthetic.js makeSimilarityPair), the Oxford bark/boat kind.
// Methods: gocor's match (variants by `quality` when the build has it), the same pipeline with plain
// correlation (method: 'correlation', the ablation of GOCor), and OpenCV's DIS (medium preset),
// DeepFlow and Farneback through /usr/bin/python3 (bench/peers.py, one call for all pairs; results
// cached in bench/out/cache/ by input content and settings; skipped with a note without cv2).
// Metrics per pair over every pixel with known ground truth, occluded ones included: AEPE and PCK-1/3/5
// (% with endpoint error < 1/3/5 px); per family the mean over pairs of the per-pair values. Time per
// pair: the call alone on decoded images (gocor at 1 thread and at all threads; peers at 1 thread).
//
// Options:
//   --only real|synthetic|aloe|homography|similarity   (comma-separated list; default: real, synthetic, aloe)
//   --quick                 one real pair per family, 3 pairs per synthetic level
//   --pairs N               pairs per synthetic level (default 15, homography 15)
//   --methods a,b,...       from gocor, gocor-fast, gocor-balanced, gocor-best, correlation, dis, deepflow,
//                           farneback (default: all the build supports)
//   --gocor-options JSON    extra match options for every gocor method, e.g. '{"numIter":{"local":3}}'
//   --out FILE              results markdown (default bench/accuracy-results.md, written by a full
//                           default run only unless --out is given)
//   --json FILE             every per-pair number, for scripts
//   --no-cache              recompute the peers' flows
//   --python PATH           the Python with cv2 (default /usr/bin/python3)
'use strict';
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const sharp = require('sharp');
const gocor = require('../dist');
const syn = require('./synthetic');

const { args, arg } = syn.cliArgs();
const t0Run = Date.now();
const loadStart = os.loadavg()[0].toFixed(1);
const QUICK = args.includes('--quick');
const SETS = ['real', 'synthetic', 'aloe', 'homography', 'similarity'];
const ONLY = arg('--only', 'real,synthetic,aloe').split(',');
for (const s of ONLY) if (!SETS.includes(s)) fail(`--only: expected one of ${SETS.join(', ')} but received ${s}`);
const PAIRS = Number(arg('--pairs', QUICK ? 3 : 15));
const PYTHON = arg('--python', '/usr/bin/python3');
const NO_CACHE = args.includes('--no-cache');
const CACHE = path.join(__dirname, 'out', 'cache');
const REAL = path.join(__dirname, '..', '..', 'shared', 'data', 'real');
const DEFAULT_OUT = path.join(__dirname, 'accuracy-results.md');
let USER_OPTS;
try {
  USER_OPTS = JSON.parse(arg('--gocor-options', '{}'));
} catch (err) {
  fail(`--gocor-options: not JSON (${err.message})`);
}

// Options of each gocor method; --gocor-options comes first, so a variant's defining option wins.
const GOCOR_METHODS = {
  gocor: {},
  'gocor-fast': { quality: 'fast' },
  'gocor-balanced': { quality: 'balanced' },
  'gocor-best': { quality: 'best' },
  correlation: { method: 'correlation' },
};
const PEER_METHODS = ['dis', 'deepflow', 'farneback'];
const FAMILY_ORDER = [
  'middlebury-flow',
  'sintel',
  'kitti-2012',
  'middlebury-stereo',
  'eth3d-stereo',
  'oxford-homography',
  'aloe',
  ...syn.CHAIRS_LEVELS.map((l) => l.name),
  ...syn.LEVELS.map((l) => `homography-${l.name}`),
  'similarity',
];

function fail(msg) {
  console.error(`bench/accuracy.js: ${msg}`);
  process.exit(2);
}

const sha256 = (...parts) => {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

// [result, wall seconds, process CPU seconds] of an async call.
async function timed(fn) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const r = await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return [r, wall, (c.user + c.system) / 1e6];
}

// ---- pairs: { id, family, set, a, b (image paths), size, truth: async () => ({ gt, valid?, occluded? }) } ----

function realPairs() {
  const index = JSON.parse(fs.readFileSync(path.join(REAL, 'index.json'), 'utf8'));
  const seen = new Set();
  const chosen = index.filter((e) => {
    if (QUICK && seen.has(e.family)) return false;
    seen.add(e.family);
    return true;
  });
  return chosen.map((e) => {
    const dir = path.join(REAL, e.scene);
    return {
      id: e.scene,
      family: e.family,
      set: 'real',
      a: path.join(dir, 'a.png'),
      b: path.join(dir, 'b.png'),
      size: e.size,
      license: e.license,
      truth: async () => ({ gt: await gocor.readFlo(path.join(dir, 'gt.flo')) }),
    };
  });
}

function aloePair() {
  const dir = path.join(syn.DATA, 'pairs');
  return {
    id: 'aloe',
    family: 'aloe',
    set: 'aloe',
    a: path.join(dir, 'aloeL.jpg'),
    b: path.join(dir, 'aloeR.jpg'),
    size: '1282x1110',
    license:
      'Middlebury 2006 stereo (Scharstein & Pal CVPR 2007; Hirschmuller & Scharstein CVPR 2007), from OpenCV samples',
    truth: async () => {
      // aloeGT.png: 8-bit disparity d of the left image at full size, 0 = unknown; flow = (-d, 0).
      const { data, info } = await sharp(path.join(dir, 'aloeGT.png'))
        .grayscale()
        .raw()
        .toBuffer({ resolveWithObject: true });
      const n = info.width * info.height;
      const gt = new Float32Array(2 * n);
      for (let i = 0; i < n; i++) gt[i] = data[i] > 0 ? -data[i] : 1e10;
      for (let i = 0; i < n; i++) gt[n + i] = data[i] > 0 ? 0 : 1e10;
      return { gt: { data: gt, width: info.width, height: info.height } };
    },
  };
}

// Renders the chairs set into bench/out/cache/pairs (PNG: what gocor and the peers both read).
async function chairsPairs() {
  const out = [];
  for await (const { level, index, source, pair } of syn.chairsSet(PAIRS)) {
    const dir = path.join(CACHE, 'pairs', level, String(index).padStart(2, '0'));
    await syn.writePng(pair.a, path.join(dir, 'a.png'));
    await syn.writePng(pair.b, path.join(dir, 'b.png'));
    const { gt, occluded } = pair;
    out.push({
      id: `${level}/${String(index).padStart(2, '0')}-${source}`,
      family: level,
      set: 'synthetic',
      a: path.join(dir, 'a.png'),
      b: path.join(dir, 'b.png'),
      size: `${syn.CHAIRS_SIZE}x${syn.CHAIRS_SIZE}`,
      layers: pair.layers,
      truth: async () => ({ gt, occluded }),
    });
    process.stderr.write(`\rsynthetic pairs ${out.length}   `);
  }
  process.stderr.write('\n');
  return out;
}

// The gray sources of the homography and similarity sets: { name, img }.
async function graySources() {
  const sources = [];
  for (const rel of ['cc0/astronaut.png', 'cc0/brick.png', 'cc0/camera.png', 'cc0/chelsea.png', 'cc0/coffee.png']) {
    sources.push({ name: path.basename(rel).replace(/\..*$/, ''), img: await syn.loadGray(path.join(syn.DATA, rel)) });
  }
  return sources;
}

// The earlier set: one homography per pair on a gray crop (b's pixels outside the source are black
// and the matches that land there are not counted).
async function homographyPairs() {
  const sources = await graySources();
  const out = [];
  for (const [li, level] of syn.LEVELS.entries()) {
    const rnd = syn.mulberry32(1000 + li);
    for (let p = 0; p < PAIRS; p++) {
      const src = sources[p % sources.length];
      const pair = syn.makePair(src.img, level.mag, rnd);
      const family = `homography-${level.name}`;
      const dir = path.join(CACHE, 'pairs', family, String(p).padStart(2, '0'));
      await syn.writePng(pair.a, path.join(dir, 'a.png'));
      await syn.writePng(pair.b, path.join(dir, 'b.png'));
      out.push({
        id: `${family}/${String(p).padStart(2, '0')}-${src.name}`,
        family,
        set: 'homography',
        a: path.join(dir, 'a.png'),
        b: path.join(dir, 'b.png'),
        size: `${syn.SIZE}x${syn.SIZE}`,
        truth: async () => ({ gt: pair.gt, valid: pair.valid }),
      });
    }
  }
  return out;
}

// Large rotations and zooms: one similarity per pair on a gray crop (b's pixels outside the source
// are black and the matches that land there are not counted).
async function similarityPairs() {
  const sources = await graySources();
  const rnd = syn.mulberry32(2000);
  const out = [];
  for (let p = 0; p < PAIRS; p++) {
    const src = sources[p % sources.length];
    const [angle, zoom] = syn.randomSimilarity(rnd);
    const pair = syn.makeSimilarityPair(src.img, angle, zoom, rnd);
    const dir = path.join(CACHE, 'pairs', 'similarity', String(p).padStart(2, '0'));
    await syn.writePng(pair.a, path.join(dir, 'a.png'));
    await syn.writePng(pair.b, path.join(dir, 'b.png'));
    out.push({
      id: `similarity/${String(p).padStart(2, '0')}-${src.name}-r${Math.round(angle)}-z${zoom.toFixed(2)}`,
      family: 'similarity',
      set: 'similarity',
      a: path.join(dir, 'a.png'),
      b: path.join(dir, 'b.png'),
      size: `${syn.SIZE}x${syn.SIZE}`,
      truth: async () => ({ gt: pair.gt, valid: pair.valid }),
    });
  }
  return out;
}

// ---- peers (bench/peers.py) ----

function python(pyArgs) {
  const r = spawnSync(PYTHON, [path.join(__dirname, 'peers.py'), ...pyArgs], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 << 20,
  });
  if (r.error) return { ok: false, why: `${PYTHON}: ${r.error.code ?? r.error.message}` };
  if (r.status !== 0) return { ok: false, why: `${PYTHON} bench/peers.py exited with ${r.status}` };
  return { ok: true, value: JSON.parse(r.stdout) };
}

// Flows of the requested peers for every pair, from the cache or from one run of peers.py.
// Returns { results: Map(`${method} ${pairId}` -> { file, time }), describe, note }.
function runPeers(methods, pairs) {
  const results = new Map();
  if (methods.length === 0) return { results, describe: null, note: null };
  const d = python(['--describe']);
  if (!d.ok) return { results, describe: null, note: `peers skipped: ${d.why} (needs OpenCV's Python bindings, cv2)` };
  const describe = d.value;
  const missing = methods.filter((m) => !describe.settings[m]);
  const dir = path.join(CACHE, 'peers');
  fs.mkdirSync(dir, { recursive: true });
  const fileHash = new Map();
  const hashOf = (f) => {
    if (!fileHash.has(f)) fileHash.set(f, sha256(fs.readFileSync(f)));
    return fileHash.get(f);
  };
  const jobs = [];
  for (const pair of pairs) {
    for (const m of methods.filter((x) => describe.settings[x])) {
      const key = sha256(m, describe.settings[m], describe.cv2, hashOf(pair.a), hashOf(pair.b)).slice(0, 24);
      const file = path.join(dir, `${m}-${key}.flo`);
      const meta = `${file}.json`;
      const entry = { file, meta };
      results.set(`${m} ${pair.id}`, entry);
      const hit = !NO_CACHE && fs.existsSync(file) && fs.existsSync(meta) ? JSON.parse(fs.readFileSync(meta)) : null;
      if (hit?.cpu !== undefined) Object.assign(entry, { time: hit.time, cpu: hit.cpu });
      else jobs.push({ method: m, a: pair.a, b: pair.b, out: file, entry });
    }
  }
  if (jobs.length > 0) {
    const jobFile = path.join(dir, 'jobs.json');
    fs.writeFileSync(jobFile, JSON.stringify(jobs.map(({ entry, ...j }) => j)));
    const r = python([jobFile]);
    if (!r.ok) return { results: new Map(), describe: null, note: `peers skipped: ${r.why}` };
    jobs.forEach((j, i) => {
      Object.assign(j.entry, { time: r.value.times[i], cpu: r.value.cpu[i] });
      const { time, cpu } = j.entry;
      fs.writeFileSync(j.entry.meta, JSON.stringify({ time, cpu, method: j.method, a: j.a, b: j.b }));
    });
  }
  const cached = results.size - jobs.length;
  const note =
    `peers: OpenCV ${describe.cv2} via ${PYTHON}, 1 thread; ${jobs.length} flows computed, ${cached} from bench/out/cache` +
    (missing.length ? `; unavailable: ${missing.join(', ')}` : '');
  return { results, describe, note };
}

// ---- gocor ----

// Whether this build's match knows the `quality` option (an unknown key is refused before any work).
async function hasQuality() {
  const img = { data: new Float32Array(64 * 64).fill(0.5), channels: 1, height: 64, width: 64 };
  try {
    await gocor.match(img, img, { quality: 'fast', threads: 1 });
    return true;
  } catch (err) {
    if (err.code === 'ERR_GOCOR_INVALID_ARG' && /quality/.test(err.message)) return false;
    throw err;
  }
}

function maxAbsDiff(x, y) {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

// ---- report ----

const METRICS = ['aepe', 'pck1', 'pck3', 'pck5'];
const meanOf = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x));
  return v.length ? v.reduce((s, x) => s + x, 0) / v.length : Number.NaN;
};

// Mean over pairs of each per-pair value, for one method over the records `rs`.
function aggregate(rs) {
  const out = { pairs: rs.length };
  for (const k of METRICS) out[k] = meanOf(rs.map((r) => r[k]));
  out.time1 = meanOf(rs.map((r) => r.time1));
  out.time1Wall = meanOf(rs.map((r) => r.time1Wall));
  out.timeAll = meanOf(rs.map((r) => r.timeAll));
  for (const part of ['noc', 'occ']) {
    if (rs.some((r) => r[part])) {
      out[part] = {};
      for (const k of METRICS) out[part][k] = meanOf(rs.map((r) => r[part]?.[k]));
      out[part].fraction = meanOf(rs.map((r) => r[part]?.count / r.count));
    }
  }
  return out;
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const pct = (x) => (Number.isFinite(x) ? (100 * x).toFixed(1) : '–');
const px = (x) => (Number.isFinite(x) ? x.toFixed(2) : '–');
const ms = (x) => (Number.isFinite(x) ? (1000 * x).toFixed(0) : '–');

function bestIndex(values, larger) {
  let best = -1;
  values.forEach((v, i) => {
    if (Number.isFinite(v) && (best < 0 || (larger ? v > values[best] : v < values[best]))) best = i;
  });
  return best;
}

function report(ctx) {
  const { methods, records, groups, meta } = ctx;
  const L = [];
  const by = (filter) =>
    Object.fromEntries(methods.map((m) => [m, aggregate(records.filter((r) => r.method === m && filter(r)))]));
  L.push('# Accuracy benchmark: gocor vs classical optical flow', '');
  L.push(
    `Generated by \`node bench/accuracy.js${meta.argv ? ` ${meta.argv}` : ''}\` on ${meta.date} in ${meta.runtime}: ` +
      `${meta.cpu}, ${meta.threads} threads, ${meta.memGiB} GiB, Node ${meta.node}; gocor ${meta.gocor} ` +
      `(backends: CPU ${meta.backends.cpu.simd} x ${meta.backends.cpu.threads} threads, CUDA ${meta.backends.cuda.available ? 'available' : 'not available'}; ` +
      `build: ${meta.buildInfo.buildSystem}, compiler ${meta.buildInfo.compiler}, CUDA compiled ${meta.buildInfo.cuda}); ` +
      `load average ${meta.load.start} at the start, ${meta.load.end} at the end (other work on the machine skews the times). ${meta.peerNote ?? ''}`,
    '',
  );
  L.push(
    'Metrics, per pair over every pixel with known ground truth (occluded pixels included): AEPE (px) and PCK-1/3/5 ' +
      "(% of pixels with endpoint error < 1 / 3 / 5 px). A family's row is the **mean over its pairs of the per-pair values**; " +
      '"overall real" is the mean over the real pairs of ../shared/data/real (aloe apart). Time: mean per pair of the ' +
      'method call on decoded images (no file I/O): gocor at 1 thread (`threads: 1`) and at all threads; the peers at 1 thread ' +
      "(`cv2.setNumThreads(1)`). 1-thread times are the process's CPU time for the call (the same as wall time on an idle " +
      'machine, and robust to other load on a shared one: wall beside it shows how loaded the machine was), all-threads ' +
      'times are wall time (only meaningful on an idle machine). ' +
      'gocor reads the images in colour, the peers in gray (uint8).',
    '',
    'Methods:',
    '',
  );
  for (const m of methods) L.push(`- **${m}**: ${meta.methodNotes[m]}`);
  L.push('');

  // Summary.
  const summaryRows = [];
  for (const fam of groups.families) summaryRows.push([fam, (r) => r.family === fam]);
  if (groups.realCount > 0) summaryRows.push([`overall real (${groups.realCount} pairs)`, (r) => r.set === 'real']);
  if (groups.synthCount > 0)
    summaryRows.push([`chairs, all (${groups.synthCount} pairs)`, (r) => r.set === 'synthetic']);
  L.push('## Summary: PCK-5 (%) / AEPE (px), mean over pairs', '');
  L.push(`| family | pairs | ${methods.join(' | ')} |`, `|---|---|${methods.map(() => '---').join('|')}|`);
  const summary = {};
  for (const [name, filter] of summaryRows) {
    const agg = by(filter);
    summary[name] = agg;
    const best = pct(
      agg[
        methods[
          bestIndex(
            methods.map((m) => agg[m].pck5),
            true,
          )
        ]
      ]?.pck5,
    );
    const cells = methods.map((m) => {
      const c = `${pct(agg[m].pck5)} / ${px(agg[m].aepe)}`;
      return pct(agg[m].pck5) === best ? `**${c}**` : c;
    });
    L.push(`| ${name} | ${agg[methods[0]].pairs} | ${cells.join(' | ')} |`);
  }
  L.push('', 'Bold: the best PCK-5 of the row (ties at the shown precision all bold).', '');

  // Who wins where.
  L.push('## Who wins where', '');
  const famWins = {};
  for (const fam of groups.families) {
    const w =
      methods[
        bestIndex(
          methods.map((m) => summary[fam][m].pck5),
          true,
        )
      ];
    famWins[w] = [...(famWins[w] ?? []), fam];
  }
  L.push(
    `Best PCK-5 per family: ${Object.entries(famWins)
      .map(([m, list]) => `**${m}** in ${plural(list.length, 'family', 'families')} (${list.join(', ')})`)
      .join('; ')}.`,
  );
  const hopeless = [...new Set(records.map((r) => r.pair))].filter((id) =>
    records.filter((r) => r.pair === id).every((r) => !(r.pck5 >= 0.05)),
  );
  if (hopeless.length > 0) {
    L.push(
      `No method matches ${hopeless.join(', ')} (PCK-5 < 5% for all); its errors of hundreds of pixels dominate the ` +
        "AEPE means of its rows, so read PCK there. (Oxford's bark pair is a 1-to-3 zoom and rotation, median flow 361 px.)",
    );
  }
  L.push('');
  for (const [name] of summaryRows) {
    const agg = summary[name];
    const b5 =
      methods[
        bestIndex(
          methods.map((m) => agg[m].pck5),
          true,
        )
      ];
    const be =
      methods[
        bestIndex(
          methods.map((m) => agg[m].aepe),
          false,
        )
      ];
    let line = `- ${name}: best PCK-5 **${b5}** (${pct(agg[b5].pck5)}%), lowest AEPE **${be}** (${px(agg[be].aepe)} px)`;
    if (agg.gocor && b5 !== 'gocor') line += `; gocor ${pct(agg.gocor.pck5)}% / ${px(agg.gocor.aepe)} px`;
    if (agg.gocor && agg.correlation) {
      const d = 100 * (agg.gocor.pck5 - agg.correlation.pck5);
      line += `; GOCor vs plain correlation ${d >= 0 ? '+' : ''}${d.toFixed(1)} PCK-5 points`;
    }
    L.push(`${line}.`);
  }
  L.push('');

  // Per family.
  for (const fam of groups.families) {
    const agg = by((r) => r.family === fam);
    const first = records.find((r) => r.family === fam);
    const withOcc = Object.values(agg).some((a) => a.occ);
    L.push(`## ${fam} (${plural(agg[methods[0]].pairs, 'pair')}${first?.size ? `, ${first.size}` : ''})`, '');
    if (withOcc) {
      const f = Object.values(agg).find((a) => a.occ).occ.fraction;
      L.push(
        `Occluded pixels (hidden in b by a layer in front, or outside b): ${pct(f)}% on average; AEPE noc / occ: over the visible / occluded pixels only.`,
        '',
      );
    }
    L.push(
      `| method | AEPE (px) | PCK-1 (%) | PCK-3 (%) | PCK-5 (%) | ms, 1 thread (CPU) | ms, 1 thread (wall) | ms, all threads (wall) |${withOcc ? ' AEPE noc | AEPE occ | PCK-5 occ (%) |' : ''}`,
      `|---|---|---|---|---|---|---|---|${withOcc ? '---|---|---|' : ''}`,
    );
    for (const m of methods) {
      const a = agg[m];
      const occ = withOcc ? ` ${px(a.noc?.aepe)} | ${px(a.occ?.aepe)} | ${pct(a.occ?.pck5)} |` : '';
      L.push(
        `| ${m} | ${px(a.aepe)} | ${pct(a.pck1)} | ${pct(a.pck3)} | ${pct(a.pck5)} | ${ms(a.time1)} | ${ms(a.time1Wall)} | ${ms(a.timeAll)} |${occ}`,
      );
    }
    L.push('');
  }

  // Per real pair.
  const realIds = [...new Set(records.filter((r) => r.set === 'real' || r.set === 'aloe').map((r) => r.pair))];
  if (realIds.length > 0) {
    L.push('## Per real pair: PCK-5 (%)', '');
    L.push(`| pair | family | size | ${methods.join(' | ')} |`, `|---|---|---|${methods.map(() => '---').join('|')}|`);
    for (const id of realIds) {
      const rs = methods.map((m) => records.find((r) => r.pair === id && r.method === m));
      const best = pct(
        rs[
          bestIndex(
            rs.map((r) => r?.pck5),
            true,
          )
        ]?.pck5,
      );
      const cells = rs.map((r) => (pct(r?.pck5) === best ? `**${best}**` : pct(r?.pck5)));
      L.push(`| ${id} | ${rs.find(Boolean).family} | ${rs.find(Boolean).size} | ${cells.join(' | ')} |`);
    }
    L.push('');
  }

  if (meta.licenses.length > 0) {
    L.push('## Data', '');
    L.push(
      'Real pairs are read from ../shared/data (not part of this repository); cite the datasets when quoting these numbers:',
      '',
    );
    for (const l of meta.licenses) L.push(`- ${l}`);
    L.push('');
  }
  return { markdown: L.join('\n'), summary, summaryRows: summaryRows.map(([n]) => n) };
}

function stdoutSummary(methods, summary, rows) {
  const w = Math.max(...rows.map((r) => r.length), 6);
  const lines = [`${'family'.padEnd(w)}  ${methods.map((m) => m.padStart(16)).join('')}`];
  for (const r of rows) {
    const cells = methods.map((m) => `${pct(summary[r][m].pck5)}/${px(summary[r][m].aepe)}`.padStart(16));
    lines.push(`${r.padEnd(w)}  ${cells.join('')}`);
  }
  return `PCK-5 (%) / AEPE (px), mean over pairs\n${lines.join('\n')}\n`;
}

// ---- main ----

async function main() {
  const quality = await hasQuality();
  const available = ['gocor', ...(quality ? ['gocor-fast', 'gocor-best'] : []), 'correlation', ...PEER_METHODS];
  const requested = arg('--methods', available.join(',')).split(',');
  for (const m of requested) {
    if (!GOCOR_METHODS[m] && !PEER_METHODS.includes(m)) {
      fail(`--methods: unknown method ${m} (known: ${[...Object.keys(GOCOR_METHODS), ...PEER_METHODS].join(', ')})`);
    }
    if (GOCOR_METHODS[m]?.quality && !quality)
      fail(`--methods: ${m} needs match's quality option, which this build lacks`);
  }

  const pairs = [];
  if (ONLY.includes('real')) pairs.push(...realPairs());
  if (ONLY.includes('aloe')) pairs.push(aloePair());
  if (ONLY.includes('synthetic')) pairs.push(...(await chairsPairs()));
  if (ONLY.includes('homography')) pairs.push(...(await homographyPairs()));
  if (ONLY.includes('similarity')) pairs.push(...(await similarityPairs()));

  const peers = runPeers(
    requested.filter((m) => PEER_METHODS.includes(m)),
    pairs,
  );
  if (peers.note) process.stderr.write(`${peers.note}\n`);
  const methods = requested.filter((m) => GOCOR_METHODS[m] || peers.describe?.settings[m]);
  const gocorMethods = methods.filter((m) => GOCOR_METHODS[m]);
  // threads is the benchmark's to set (1, then all).
  const optionsOf = (m) => {
    const o = { ...USER_OPTS, ...GOCOR_METHODS[m] };
    delete o.threads;
    return o;
  };

  const records = [];
  let warm = false;
  for (const [pi, pair] of pairs.entries()) {
    const { gt, valid, occluded } = await pair.truth();
    const n = gt.width * gt.height;
    const known = valid ?? new Uint8Array(n).fill(1);
    const parts = occluded
      ? { noc: known.map((v, i) => (v && !occluded[i] ? 1 : 0)), occ: known.map((v, i) => (v && occluded[i] ? 1 : 0)) }
      : {};
    const score = (flow) => {
      const s = syn.flowScore(flow, gt, known);
      for (const [k, mask] of Object.entries(parts)) s[k] = syn.flowScore(flow, gt, mask);
      return s;
    };
    const base = { pair: pair.id, family: pair.family, set: pair.set, size: pair.size };
    if (gocorMethods.length > 0) {
      const a = await gocor.loadImage(pair.a);
      const b = await gocor.loadImage(pair.b);
      if (!warm) {
        for (const m of gocorMethods) await gocor.match(a, b, optionsOf(m));
        warm = true;
      }
      for (const m of gocorMethods) {
        const [flow1, time1Wall, time1] = await timed(() => gocor.match(a, b, { ...optionsOf(m), threads: 1 }));
        const [flowAll, timeAll] = await timed(() => gocor.match(a, b, optionsOf(m)));
        const threadsDiff = maxAbsDiff(flow1.data, flowAll.data);
        records.push({ ...base, method: m, ...score(flow1), time1, time1Wall, timeAll, threadsDiff });
      }
    }
    for (const m of methods.filter((x) => PEER_METHODS.includes(x))) {
      const entry = peers.results.get(`${m} ${pair.id}`);
      const flow = await gocor.readFlo(entry.file);
      records.push({
        ...base,
        method: m,
        ...score(flow),
        time1: entry.cpu,
        time1Wall: entry.time,
        timeAll: Number.NaN,
      });
    }
    const g = records.find((r) => r.pair === pair.id && r.method === 'gocor');
    process.stderr.write(
      `[${pi + 1}/${pairs.length}] ${pair.id}${g ? `: gocor PCK-5 ${pct(g.pck5)}%, ${ms(g.time1)} ms` : ''}\n`,
    );
  }

  const families = FAMILY_ORDER.filter((f) => pairs.some((p) => p.family === f));
  const licenses = [...new Set(pairs.filter((p) => p.license).map((p) => `${p.family}: ${p.license}`))];
  const extra = Object.keys(USER_OPTS).length ? ` + --gocor-options ${JSON.stringify(USER_OPTS)}` : '';
  const methodNotes = {
    gocor: `\`match(a, b, {})\`, the defaults${extra}`,
    'gocor-fast': `\`match(a, b, { quality: 'fast' })\`${extra}`,
    'gocor-balanced': `\`match(a, b, { quality: 'balanced' })\`${extra}`,
    'gocor-best': `\`match(a, b, { quality: 'best' })\`${extra}`,
    correlation: `\`match(a, b, { method: 'correlation' })\`: gocor's pipeline with plain correlation volumes instead of GOCor (the ablation)${extra}`,
  };
  for (const m of PEER_METHODS)
    if (peers.describe?.settings[m]) methodNotes[m] = `OpenCV ${peers.describe.settings[m]}`;
  const runtime = `${((Date.now() - t0Run) / 60000).toFixed(1)} min`;
  // The committed results come from the full set with the default methods and options.
  const defaultRun = !['--only', '--quick', '--pairs', '--methods', '--gocor-options'].some((o) => args.includes(o));
  const meta = {
    date: new Date().toISOString().slice(0, 10),
    runtime,
    argv: args.join(' '),
    cpu: os.cpus()[0]?.model ?? 'unknown CPU',
    threads: os.availableParallelism?.() ?? os.cpus().length,
    memGiB: Math.round(os.totalmem() / 1024 ** 3),
    load: { start: loadStart, end: os.loadavg()[0].toFixed(1) },
    node: process.version,
    gocor: gocor.version(),
    backends: gocor.backends(),
    buildInfo: gocor.buildInfo(),
    peerNote: peers.note ? `${peers.note[0].toUpperCase()}${peers.note.slice(1)}.` : null,
    gocorOptions: USER_OPTS,
    methodNotes,
    licenses,
  };
  const groups = {
    families,
    realCount: new Set(records.filter((r) => r.set === 'real').map((r) => r.pair)).size,
    synthCount: new Set(records.filter((r) => r.set === 'synthetic').map((r) => r.pair)).size,
  };
  const { markdown, summary, summaryRows } = report({ methods, records, groups, meta });
  const outArg = arg('--out');
  if (outArg || defaultRun) {
    fs.writeFileSync(outArg ?? DEFAULT_OUT, `${markdown}\n`);
    process.stderr.write(`wrote ${outArg ?? DEFAULT_OUT}\n`);
  } else {
    process.stderr.write(
      `(not a full default run: ${path.relative(process.cwd(), DEFAULT_OUT)} left as is; --out FILE to write one)\n`,
    );
  }
  const jsonArg = arg('--json');
  if (jsonArg) {
    fs.writeFileSync(jsonArg, JSON.stringify({ meta, methods, summary, records }, null, 1));
    process.stderr.write(`wrote ${jsonArg}\n`);
  }
  process.stdout.write(stdoutSummary(methods, summary, summaryRows));
  if (gocorMethods.length > 0) {
    const maxDiff = Math.max(0, ...records.map((r) => r.threadsDiff ?? 0));
    process.stdout.write(
      `gocor: largest flow difference between 1 thread and all threads ${maxDiff.toExponential(2)} px\n`,
    );
  }
  process.stdout.write(`run ${runtime}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
