/**
 * `gocor report`: a static HTML page over a batch (or a single `gocor match` folder). The page and its
 * thumbnails live in one folder (default OUTDIR/report/) that opens from disk without a server;
 * thumbnails link to the full-size outputs by relative paths.
 */
import { mkdir, readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { GocorError } from '../errors';
import { readRegularFile } from '../files';
import { MAX_IMAGE_PIXELS } from '../image';
import { writeFileAtomic } from './atomic';
import { OUTPUT_FILES, type PairResult, RESULT_FILE } from './pair';

const THUMB = 200;

interface Row {
  rec: PairResult;
  /** Pair folder relative to OUTDIR ('.' for a single match folder). */
  dir: string;
  thumbs: { a?: string; b?: string; flow?: string; warped?: string };
  full: { flow?: string; warped?: string; confidence?: string };
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const finite = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const obj = (v: unknown): Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

/**
 * A result.json as the report may use it: every field of the type it should have (or left out), and
 * only gocor's own output file names, whatever the file held. The page is built from this alone.
 */
export function cleanRecord(raw: unknown): PairResult | undefined {
  const r = obj(raw);
  const side = (v: unknown) => {
    const o = obj(v);
    const p = str(o.path);
    return p === undefined ? undefined : { path: p, width: finite(o.width), height: finite(o.height) };
  };
  const a = side(r.a);
  const b = side(r.b);
  if (!a || !b) return undefined;
  const m = obj(r.metrics);
  const metrics = {
    aepe: finite(m.aepe),
    pck1: finite(m.pck1),
    pck3: finite(m.pck3),
    pck5: finite(m.pck5),
    validPixels: finite(m.validPixels),
  };
  const totalMs = finite(obj(r.timings).totalMs);
  const files: PairResult['files'] = {};
  const listed = obj(r.files);
  for (const [role, name] of Object.entries(OUTPUT_FILES) as [keyof typeof OUTPUT_FILES, string][]) {
    if (listed[role] === name) files[role] = name;
  }
  const err = obj(r.error);
  const index = r.index;
  return {
    status: r.status === 'ok' ? 'ok' : 'error',
    ...(Number.isSafeInteger(index) && (index as number) > 0 && { index: index as number }),
    a,
    b,
    method: str(r.method) ?? '',
    options: {},
    ...(metrics.aepe !== undefined && { metrics: metrics as PairResult['metrics'] }),
    ...(totalMs !== undefined && { timings: { loadMs: 0, matchMs: 0, writeMs: 0, totalMs } }),
    files,
    ...(r.status !== 'ok' && { error: { code: str(err.code) ?? 'error', message: str(err.message) ?? '' } }),
    gocor: str(r.gocor) ?? '',
    finishedAt: str(r.finishedAt) ?? '',
  };
}

async function readRecord(file: string): Promise<PairResult | undefined> {
  try {
    // A result.json is a few kilobytes; a regular file bounded by the memory limit, never a FIFO.
    return cleanRecord(JSON.parse((await readRegularFile(file, 'result')).toString('utf8')));
  } catch {
    return undefined;
  }
}

/** The records of OUTDIR: its own result.json (a `gocor match` folder) or those of its pair folders. */
export async function collectResults(outDir: string): Promise<{ dir: string; rec: PairResult }[]> {
  const own = await readRecord(path.join(outDir, RESULT_FILE));
  if (own) return [{ dir: '.', rec: own }];
  let entries: string[];
  try {
    entries = (await readdir(outDir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (err) {
    throw new GocorError('ERR_GOCOR_IO', `cannot read ${outDir}: ${(err as Error).message}`, { cause: err });
  }
  const out: { dir: string; rec: PairResult }[] = [];
  for (const dir of entries) {
    const rec = await readRecord(path.join(outDir, dir, RESULT_FILE));
    if (rec) out.push({ dir, rec });
  }
  if (out.length === 0) {
    throw new GocorError(
      'ERR_GOCOR_INVALID_ARG',
      `no results in ${outDir}: expected the folder of a gocor batch or gocor match run`,
    );
  }
  const num = (d: { dir: string; rec: PairResult }) => d.rec.index ?? Number.parseInt(d.dir, 10);
  out.sort((x, y) => num(x) - num(y) || x.dir.localeCompare(y.dir));
  return out;
}

/**
 * Which images the report may read: files inside OUTDIR (after symlinks), and the inputs the user
 * named (the batch's pair list or folder). A result.json is data, not a permission: one naming
 * ~/private.png must not put that image's thumbnail into a report that may be shared.
 */
export interface ReportInputs {
  /** Image paths named by the user (absolute). */
  files?: Iterable<string>;
  /** Folders whose images (directly inside) may be read. */
  folders?: Iterable<string>;
}

type Readable = (file: string) => Promise<string | undefined>;

async function readableImages(outDir: string, inputs: ReportInputs): Promise<Readable> {
  const real = async (p: string) => realpath(p).catch(() => undefined);
  const root = (await real(outDir)) ?? path.resolve(outDir);
  const files = new Set([...(inputs.files ?? [])].map((f) => path.resolve(f)));
  const folders = new Set<string>();
  for (const f of inputs.folders ?? []) folders.add((await real(f)) ?? path.resolve(f));
  const inside = (p: string, dir: string) => {
    const rel = path.relative(dir, p);
    return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
  };
  // The path to read, or undefined: allowed, and a regular file (a FIFO would hang sharp).
  return async (file) => {
    if (!path.isAbsolute(file)) return undefined;
    const target = await real(file);
    if (!target) return undefined;
    const allowed = files.has(path.resolve(file)) || inside(target, root) || folders.has(path.dirname(target));
    if (!allowed) return undefined;
    const st = await stat(target).catch(() => undefined);
    return st?.isFile() ? target : undefined;
  };
}

/** A thumbnail (JPEG) of `src` at exactly `size` or fitting in THUMB x THUMB; undefined if `src` is unreadable. */
async function thumbnail(
  src: string | undefined,
  dst: string,
  size?: { width: number; height: number },
): Promise<{ width: number; height: number } | undefined> {
  if (src === undefined) return undefined;
  try {
    const input = sharp(src, { failOn: 'error', limitInputPixels: MAX_IMAGE_PIXELS });
    // SVG is rendered with the files it references: never in a report.
    if ((await input.metadata()).format === 'svg') return undefined;
    const pipeline = input.rotate();
    const resized = size
      ? pipeline.resize(size.width, size.height, { fit: 'fill' })
      : pipeline.resize(THUMB, THUMB, { fit: 'inside', withoutEnlargement: true });
    const { data, info } = await resized
      .flatten({ background: '#000' })
      .jpeg({ quality: 85 })
      .toBuffer({ resolveWithObject: true });
    await writeFileAtomic(dst, data);
    return { width: info.width, height: info.height };
  } catch {
    return undefined;
  }
}

function esc(s: unknown): string {
  return String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A URL path for a relative file path (each segment encoded, separators '/'). */
function href(rel: string): string {
  return rel.split(path.sep).map(encodeURIComponent).join('/');
}

function fmt(v: number | undefined, digits: number): string {
  return v === undefined || !Number.isFinite(v) ? '' : v.toFixed(digits);
}

export interface ReportResult {
  path: string;
  pairs: number;
  ok: number;
  failed: number;
}

/**
 * Writes `<reportDir>/index.html` and `<reportDir>/thumbs/` for the results in `outDir`; images
 * outside `outDir` are shown only when `inputs` names them.
 */
export async function writeReport(
  outDir: string,
  reportDir = path.join(outDir, 'report'),
  inputs: ReportInputs = {},
): Promise<ReportResult> {
  const records = await collectResults(outDir);
  const readable = await readableImages(outDir, inputs);
  const thumbDir = path.join(reportDir, 'thumbs');
  await mkdir(thumbDir, { recursive: true });
  const rows: Row[] = [];
  let next = 0;
  const work = async () => {
    while (next < records.length) {
      const { dir, rec } = records[next++] as { dir: string; rec: PairResult };
      const pairDir = path.join(outDir, dir);
      const key = dir === '.' ? 'pair' : dir;
      const rel = (file: string) => href(path.relative(reportDir, path.join(pairDir, file)));
      const row: Row = { rec, dir, thumbs: {}, full: {} };
      const t = (suffix: string) => path.join(thumbDir, `${key}-${suffix}.jpg`);
      const tref = (suffix: string) => href(path.join('thumbs', `${key}-${suffix}.jpg`));
      const sizeA = await thumbnail(await readable(rec.a.path), t('a'));
      if (sizeA) row.thumbs.a = tref('a');
      if (await thumbnail(await readable(rec.b.path), t('b'))) row.thumbs.b = tref('b');
      if (rec.status === 'ok' && rec.files) {
        const own = async (name: string) => readable(path.join(pairDir, name));
        // The warped B and the flow live on A's grid: same thumbnail size as A, so the overlay lines up.
        if (rec.files.flowColor && (await thumbnail(await own(rec.files.flowColor), t('flow'), sizeA))) {
          row.thumbs.flow = tref('flow');
          row.full.flow = rel(rec.files.flowColor);
        }
        if (rec.files.warped && (await thumbnail(await own(rec.files.warped), t('warped'), sizeA))) {
          row.thumbs.warped = tref('warped');
          row.full.warped = rel(rec.files.warped);
        }
        if (rec.files.confidence) row.full.confidence = rel(rec.files.confidence);
      }
      rows.push(row);
    }
  };
  await Promise.all(Array.from({ length: 4 }, work));
  const order = new Map(records.map((r, k) => [r.dir, k]));
  rows.sort((x, y) => (order.get(x.dir) as number) - (order.get(y.dir) as number));
  const html = renderHtml(rows, outDir);
  const file = path.join(reportDir, 'index.html');
  await writeFileAtomic(file, html);
  const ok = rows.filter((r) => r.rec.status === 'ok').length;
  return { path: file, pairs: rows.length, ok, failed: rows.length - ok };
}

function img(src: string | undefined, alt: string, link?: string): string {
  if (!src) return `<span class="missing">${esc(alt)}: not available</span>`;
  const tag = `<img src="${src}" alt="${esc(alt)}" loading="eager">`;
  return link ? `<a href="${link}">${tag}</a>` : tag;
}

function renderRow(r: Row, k: number): string {
  const { rec } = r;
  const m = rec.metrics;
  const name = path.basename(rec.a.path);
  const index = rec.index ?? k + 1;
  const aepe = m?.aepe;
  const time = rec.timings?.totalMs;
  const compare =
    r.thumbs.a && r.thumbs.warped
      ? `<div class="cmp"><img src="${r.thumbs.a}" alt="A"><div class="top"><img src="${r.thumbs.warped}" alt="B warped onto A"></div></div>` +
        `<input class="slider" type="range" min="0" max="100" value="50" aria-label="A / warped B split">`
      : '<span class="missing">no warped image</span>';
  const status =
    rec.status === 'ok'
      ? '<span class="ok">ok</span>'
      : `<span class="err">${esc(rec.error?.code ?? 'error')}</span><div class="msg">${esc(rec.error?.message ?? '')}</div>`;
  const sizes = rec.a.width ? `${rec.a.width}×${rec.a.height} → ${rec.b.width}×${rec.b.height}` : '';
  // Every value from result.json is escaped, numbers included (cleanRecord typed them; this is the second guard).
  return `<tr data-index="${esc(index)}" data-aepe="${esc(aepe)}" data-pck1="${esc(m?.pck1)}" data-pck3="${esc(m?.pck3)}" data-pck5="${esc(m?.pck5)}" data-time="${esc(time)}" data-status="${rec.status === 'ok' ? 0 : 1}">
<td>${esc(index)}</td>
<td class="name"><div title="${esc(rec.a.path)}">${esc(name)}</div><div class="small" title="${esc(rec.b.path)}">${esc(path.basename(rec.b.path))}</div><div class="small">${esc(sizes)}</div></td>
<td>${img(r.thumbs.a, 'A')}</td>
<td>${img(r.thumbs.b, 'B')}</td>
<td>${img(r.thumbs.flow, 'flow', r.full.flow)}</td>
<td>${compare}</td>
<td class="num">${esc(fmt(aepe, 3))}</td>
<td class="num">${esc(fmt(m?.pck1 !== undefined ? m.pck1 * 100 : undefined, 1))}</td>
<td class="num">${esc(fmt(m?.pck3 !== undefined ? m.pck3 * 100 : undefined, 1))}</td>
<td class="num">${esc(fmt(m?.pck5 !== undefined ? m.pck5 * 100 : undefined, 1))}</td>
<td class="num">${esc(fmt(time !== undefined ? time / 1000 : undefined, 2))}</td>
<td>${status}</td>
</tr>`;
}

function renderHtml(rows: Row[], outDir: string): string {
  const ok = rows.filter((r) => r.rec.status === 'ok');
  const withMetrics = ok.filter((r) => r.rec.metrics && Number.isFinite(r.rec.metrics.aepe));
  const mean = (xs: number[]) => (xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : Number.NaN);
  const meanAepe = mean(withMetrics.map((r) => r.rec.metrics?.aepe as number));
  const meanTime = mean(ok.map((r) => r.rec.timings?.totalMs ?? Number.NaN).filter(Number.isFinite));
  const methods = [...new Set(rows.map((r) => r.rec.method))].join(', ');
  const summary = [
    `${rows.length} pairs`,
    `${ok.length} ok`,
    `${rows.length - ok.length} failed`,
    `method ${methods}`,
    ...(withMetrics.length
      ? [`mean AEPE ${meanAepe.toFixed(3)} px over ${withMetrics.length} pairs with ground truth`]
      : []),
    ...(Number.isFinite(meanTime) ? [`mean time ${(meanTime / 1000).toFixed(2)} s per pair`] : []),
  ].join(' · ');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gocor report: ${esc(path.basename(path.resolve(outDir)))}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1rem;color:#222;background:#fafafa}
h1{font-size:1.3rem;margin:0 0 .3rem}
.summary{color:#555;margin-bottom:.8rem}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}
th button{font:inherit;border:0;background:none;cursor:pointer;padding:0}
th button[data-dir="asc"]::after{content:" ▲"}
th button[data-dir="desc"]::after{content:" ▼"}
td img{max-width:${THUMB}px;max-height:${THUMB}px;display:block}
.num{text-align:right;font-variant-numeric:tabular-nums}
.small{color:#777;font-size:12px}
.name{min-width:10rem;max-width:16rem;overflow-wrap:anywhere}
.ok{color:#187a2f}.err{color:#b00020;font-weight:600}.msg{font-size:12px;max-width:18rem;word-break:break-word}
.missing{color:#999;font-size:12px}
.cmp{position:relative;display:inline-block}
.cmp .top{position:absolute;left:0;top:0;height:100%;width:50%;overflow:hidden;border-right:1px solid #fff}
.cmp .top img{max-width:none}
.slider{width:100%;display:block}
body.blink-b .cmp .top{width:100%!important}
body.blink-a .cmp .top{width:0!important}
.controls{margin:.5rem 0}
#errors:empty{display:none}
#errors{color:#b00020}
</style>
</head>
<body data-ready="0">
<h1>gocor report</h1>
<div class="summary">${esc(summary)}</div>
<div class="controls"><label><input type="checkbox" id="blink"> blink A / warped B</label>
<span class="small">(or drag the slider under each pair: left of the split is B warped onto A, right is A)</span></div>
<pre id="errors"></pre>
<table id="pairs">
<thead><tr>
<th><button type="button" data-key="index" data-dir="asc">#</button></th>
<th>pair</th><th>A</th><th>B</th><th>flow</th><th>A / B warped onto A</th>
<th><button type="button" data-key="aepe" title="average end-point error, pixels">AEPE</button></th>
<th><button type="button" data-key="pck1" title="% of pixels within 1 px">PCK-1</button></th>
<th><button type="button" data-key="pck3">PCK-3</button></th>
<th><button type="button" data-key="pck5">PCK-5</button></th>
<th><button type="button" data-key="time">time s</button></th>
<th><button type="button" data-key="status">status</button></th>
</tr></thead>
<tbody>
${rows.map(renderRow).join('\n')}
</tbody>
</table>
<script>
(function () {
  'use strict';
  var errors = document.getElementById('errors');
  window.addEventListener('error', function (e) {
    errors.textContent += 'error: ' + (e.message || (e.target && e.target.src) || 'unknown') + '\\n';
  }, true);
  var tbody = document.querySelector('#pairs tbody');
  var buttons = Array.prototype.slice.call(document.querySelectorAll('th button'));
  function value(row, key) {
    var v = row.getAttribute('data-' + key);
    return v === '' || v === null ? NaN : Number(v);
  }
  function sortBy(key, dir) {
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (x, y) {
      var a = value(x, key), b = value(y, key);
      // Rows without the value (no ground truth, failed) go last in either direction.
      if (isNaN(a) || isNaN(b)) return (isNaN(a) ? 1 : 0) - (isNaN(b) ? 1 : 0) || value(x, 'index') - value(y, 'index');
      return (dir === 'asc' ? a - b : b - a) || value(x, 'index') - value(y, 'index');
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
    buttons.forEach(function (b) { b.removeAttribute('data-dir'); });
    var button = document.querySelector('th button[data-key="' + key + '"]');
    if (button) button.setAttribute('data-dir', dir);
  }
  buttons.forEach(function (b) {
    b.addEventListener('click', function () {
      var key = b.getAttribute('data-key');
      var dir = b.getAttribute('data-dir') === 'desc' ? 'asc' : b.getAttribute('data-dir') === 'asc' ? 'desc' : key === 'aepe' || key === 'time' || key === 'status' ? 'desc' : 'asc';
      sortBy(key, dir);
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll('.slider'), function (s) {
    var top = s.previousElementSibling.querySelector('.top');
    var topImg = top.querySelector('img');
    var base = s.previousElementSibling.querySelector('img');
    function sync() {
      topImg.style.width = base.clientWidth + 'px';
      top.style.width = s.value + '%';
    }
    s.addEventListener('input', sync);
    base.addEventListener('load', sync);
    sync();
  });
  var blinkTimer = null;
  document.getElementById('blink').addEventListener('change', function (e) {
    clearInterval(blinkTimer);
    document.body.classList.remove('blink-a', 'blink-b');
    if (!e.target.checked) return;
    var showB = false;
    blinkTimer = setInterval(function () {
      showB = !showB;
      document.body.classList.toggle('blink-b', showB);
      document.body.classList.toggle('blink-a', !showB);
    }, 600);
  });
  var params = new URLSearchParams(location.search);
  if (params.get('sort')) sortBy(params.get('sort'), params.get('dir') === 'asc' ? 'asc' : 'desc');
  window.addEventListener('load', function () {
    var broken = Array.prototype.filter.call(document.images, function (i) { return !i.complete || i.naturalWidth === 0; });
    document.body.setAttribute('data-images', String(document.images.length));
    document.body.setAttribute('data-broken-images', String(broken.length));
    document.body.setAttribute('data-ready', '1');
  });
})();
</script>
</body>
</html>
`;
}
