/**
 * One pair from images to files: match, then write flow.flo, flow.png, warped.png, confidence.png
 * and, last of all, result.json. result.json is the completion marker: a pair folder without it
 * (or with one that does not list the same inputs and options) is redone on the next batch run.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { GocorError } from '../errors';
import { checkMemory } from '../exec';
import { decodeBytes, imageHeader } from '../image';
import type { MatchOptions, MatchResult } from '../match';
import type { Network, NetworkModel } from '../networks';
import type { Image } from '../types';
import { api, type Flow } from './api';
import { makeFolder, removeStaleTemps, writeFileAtomic, writeJsonAtomic } from './atomic';
import { loadGroundTruth } from './groundtruth';

/** The output files of one pair, by role. */
export const OUTPUT_FILES = {
  flow: 'flow.flo',
  flowColor: 'flow.png',
  warped: 'warped.png',
  confidence: 'confidence.png',
  occlusion: 'occlusion.png',
} as const;

export const RESULT_FILE = 'result.json';

/** AEPE (pixels), PCK-1/3/5 (fractions, error <= 1, 3, 5 px) over `validPixels` pixels with known ground truth. */
export interface PairMetrics {
  aepe: number;
  pck1: number;
  pck3: number;
  pck5: number;
  validPixels: number;
}

/**
 * The matching options as the CLI collects them: `options` is exactly what `match` gets (only what
 * was set, so the library's defaults apply; the library validates it) and what result.json records.
 */
export interface MatchSettings {
  options: MatchOptions;
  /** Decode SVG inputs (refused by default: librsvg embeds files from the SVG's folder). */
  allowSvg?: boolean;
  /** Run an official network (`--network FILE --model NAME`) instead of match. */
  network?: { file: string; model: NetworkModel };
}

// Networks loaded once per process (a batch reuses them), by file and model.
const networks = new Map<string, Promise<Network>>();

function network(s: NonNullable<MatchSettings['network']>, options: MatchOptions): Promise<Network> {
  const key = JSON.stringify([s.file, s.model, options.numIter, options.device, options.threads]);
  let net = networks.get(key);
  if (!net) {
    // match's numIter: K for both stages, or {global, local}.
    const it = options.numIter;
    const global = typeof it === 'number' ? it : it?.global;
    const local = typeof it === 'number' ? it : it?.local;
    net = api().loadNetwork(s.file, {
      model: s.model,
      ...(global !== undefined && { numIterGlobal: global }),
      ...(local !== undefined && { numIterLocal: local }),
      ...(options.device !== undefined && { device: options.device }),
      ...(options.threads !== undefined && { threads: options.threads }),
    });
    networks.set(key, net);
    net.catch(() => networks.delete(key));
  }
  return net;
}

export interface PairInput {
  a: string;
  b: string;
  gt?: string;
  /** Batch only. */
  index?: number;
}

/** What result.json holds (and what one line of results.jsonl holds, with `dir`). */
export interface PairResult {
  status: 'ok' | 'error';
  index?: number;
  dir?: string;
  a: { path: string; width?: number; height?: number };
  b: { path: string; width?: number; height?: number };
  gt?: { path: string };
  flow?: { width: number; height: number };
  method: string;
  options: Record<string, unknown>;
  device?: string;
  /** Milliseconds; `stages`: match's own per-stage times. */
  timings?: { loadMs: number; matchMs: number; writeMs: number; totalMs: number; stages?: Record<string, number> };
  metrics?: PairMetrics;
  files?: Partial<Record<keyof typeof OUTPUT_FILES, string>>;
  error?: { code: string; message: string };
  gocor: string;
  finishedAt: string;
}

/** CHW float [0,1] -> PNG (1 channel gray or 3 channel RGB). */
export async function imageToPng(img: Image): Promise<Buffer> {
  const { width: W, height: H, channels: C } = img;
  const plane = W * H;
  const px = Buffer.allocUnsafe(plane * C);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < C; c++) {
      const v = img.data[c * plane + p] as number;
      // v !== v is NaN: pixels warped from outside b have no value; show them black.
      px[p * C + c] = Number.isNaN(v) ? 0 : Math.round(Math.min(1, Math.max(0, v)) * 255);
    }
  }
  const raw = sharp(px, { raw: { width: W, height: H, channels: C as 1 | 3 } });
  // Without an explicit b-w colour space libvips stores one channel as RGB.
  return (C === 1 ? raw.toColourspace('b-w') : raw).png().toBuffer();
}

/** [H, W] values in [0, 1] -> 8-bit gray PNG. */
/** A 0/1 mask (H, W) -> 8-bit gray PNG, 255 where set. */
export async function maskToPng(mask: Uint8Array, width: number, height: number): Promise<Buffer> {
  const px = Buffer.allocUnsafe(width * height);
  for (let i = 0; i < px.length; i++) px[i] = mask[i] ? 255 : 0;
  return sharp(px, { raw: { width, height, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toBuffer();
}

export async function confidenceToPng(conf: Float32Array, width: number, height: number): Promise<Buffer> {
  const px = Buffer.allocUnsafe(width * height);
  for (let p = 0; p < px.length; p++) {
    const v = conf[p] as number;
    px[p] = Number.isNaN(v) ? 0 : Math.round(Math.min(1, Math.max(0, v)) * 255);
  }
  return sharp(px, { raw: { width, height, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toBuffer();
}

function ms(since: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - since) / 1e4) / 100;
}

function errorRecord(err: unknown): { code: string; message: string } {
  if (err instanceof GocorError) return { code: err.code, message: err.message };
  const e = err as { code?: unknown; message?: unknown };
  return {
    code: typeof e?.code === 'string' ? e.code : 'ERR_GOCOR_INTERNAL',
    message: typeof e?.message === 'string' ? e.message : String(err),
  };
}

/** The record of a pair before any work: `status: 'error'` until the work sets it 'ok'. */
/** The options result.json records: match's, and the network when one runs instead. */
function recordedOptions(settings: MatchSettings): Record<string, unknown> {
  return { ...settings.options, ...(settings.network && { network: settings.network }) };
}

export function pendingRecord(input: PairInput, settings: MatchSettings): PairResult {
  return {
    status: 'error',
    ...(input.index !== undefined && { index: input.index }),
    a: { path: input.a },
    b: { path: input.b },
    ...(input.gt && { gt: { path: input.gt } }),
    method: settings.network?.model ?? settings.options.method ?? 'gocor',
    options: recordedOptions(settings),
    gocor: api().version(),
    finishedAt: '',
  };
}

/**
 * Matches one pair into `outDir`. Never throws for a problem of the pair itself, its output folder and
 * files included: the returned record (also written as result.json when the folder allows) says
 * `status: 'error'` with the GocorError code and message.
 * `problem` marks a pair that is known to be unusable before any work (a malformed list line).
 */
export async function runPair(
  input: PairInput,
  outDir: string,
  settings: MatchSettings,
  problem?: GocorError,
): Promise<PairResult> {
  const t0 = process.hrtime.bigint();
  const g = api();
  const options = settings.options;
  const record = pendingRecord(input, settings);
  try {
    await makeFolder(outDir);
    await removeStaleTemps(outDir);
    if (problem) throw problem;
    const imageOpts = settings.allowSvg ? { allowSvg: true } : {};
    // Both images are decoded at once: their headers say whether that fits, before any pixel is.
    const [ha, hb] = await Promise.all([imageHeader(input.a, imageOpts), imageHeader(input.b, imageOpts)]);
    checkMemory(
      decodeBytes(ha) + decodeBytes(hb),
      `decoding ${input.a} (${ha.width}x${ha.height}) and ${input.b} (${hb.width}x${hb.height})`,
      'resize the images first',
    );
    const [imgA, imgB] = await Promise.all([g.loadImage(input.a, imageOpts), g.loadImage(input.b, imageOpts)]);
    record.a = { path: input.a, width: imgA.width, height: imgA.height };
    record.b = { path: input.b, width: imgB.width, height: imgB.height };
    const loadMs = ms(t0);
    const t1 = process.hrtime.bigint();
    const flow: MatchResult = settings.network
      ? await (await network(settings.network, options)).match(imgA, imgB, {
          ...(options.outputShape && { outputShape: options.outputShape }),
        })
      : await g.match(imgA, imgB, options);
    const matchMs = ms(t1);
    const t2 = process.hrtime.bigint();
    record.flow = { width: flow.width, height: flow.height };
    record.device = flow.device;
    if (input.gt) record.metrics = await metricsAgainst(flow, input.gt);
    // With an output shape, the vectors are in output pixels: b is scaled as a was before warping.
    const bOnGrid =
      flow.width === imgA.width && flow.height === imgA.height
        ? imgB
        : await g.loadImage(input.b, {
            ...imageOpts,
            resize: {
              width: Math.max(1, Math.round((imgB.width * flow.width) / imgA.width)),
              height: Math.max(1, Math.round((imgB.height * flow.height) / imgA.height)),
            },
          });
    const [color, warped] = await Promise.all([g.flowToColor(flow), g.warpImage(bOnGrid, flow).then(imageToPng)]);
    const files: PairResult['files'] = {};
    await g.writeFlo(path.join(outDir, OUTPUT_FILES.flow), flow);
    files.flow = OUTPUT_FILES.flow;
    await writeFileAtomic(path.join(outDir, OUTPUT_FILES.flowColor), color);
    files.flowColor = OUTPUT_FILES.flowColor;
    await writeFileAtomic(path.join(outDir, OUTPUT_FILES.warped), warped);
    files.warped = OUTPUT_FILES.warped;
    if (flow.confidence) {
      await writeFileAtomic(
        path.join(outDir, OUTPUT_FILES.confidence),
        await confidenceToPng(flow.confidence, flow.width, flow.height),
      );
      files.confidence = OUTPUT_FILES.confidence;
    }
    if (flow.occlusion) {
      await writeFileAtomic(
        path.join(outDir, OUTPUT_FILES.occlusion),
        await maskToPng(flow.occlusion, flow.width, flow.height),
      );
      files.occlusion = OUTPUT_FILES.occlusion;
    }
    record.files = files;
    record.timings = {
      loadMs,
      matchMs,
      writeMs: ms(t2),
      totalMs: ms(t0),
      ...(flow.timings && { stages: flow.timings }),
    };
    record.status = 'ok';
  } catch (err) {
    record.error = errorRecord(err);
    record.timings = undefined;
  }
  record.finishedAt = new Date().toISOString();
  try {
    await writeJsonAtomic(path.join(outDir, RESULT_FILE), record);
  } catch (err) {
    // Without result.json the pair is not complete, whatever else was written: it fails here and is
    // redone on the next run. A failure that came first (the folder itself) is the one to report.
    if (record.status === 'ok') {
      record.status = 'error';
      record.error = errorRecord(err);
      record.timings = undefined;
    }
  }
  return record;
}

async function metricsAgainst(flow: Flow, gtPath: string): Promise<PairMetrics> {
  const gt = await loadGroundTruth(gtPath, flow);
  if (gt.flow.width !== flow.width || gt.flow.height !== flow.height) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `ground truth ${gtPath} is ${gt.flow.width}x${gt.flow.height} but the flow is ${flow.width}x${flow.height}`,
    );
  }
  const m = api().flowMetrics(flow, gt.flow, gt.valid);
  return { aepe: m.aepe, pck1: m.pck1, pck3: m.pck3, pck5: m.pck5, validPixels: m.count };
}

/** The options that decide the result; the thread count does not, so a rerun may change it. */
export function fingerprint(options: object): string {
  const { threads: _threads, ...rest } = options as Record<string, unknown>;
  return JSON.stringify(rest);
}

/**
 * The record of a pair whose outputs are complete for these inputs and options, or undefined:
 * result.json present, status ok, same inputs and options, and every file it lists present and non-empty.
 */
export async function completedPair(
  input: PairInput,
  outDir: string,
  settings: MatchSettings,
): Promise<PairResult | undefined> {
  let rec: PairResult;
  try {
    rec = JSON.parse(await readFile(path.join(outDir, RESULT_FILE), 'utf8')) as PairResult;
  } catch {
    return undefined;
  }
  if (
    rec.status !== 'ok' ||
    rec.a?.path !== input.a ||
    rec.b?.path !== input.b ||
    (rec.gt?.path ?? undefined) !== input.gt
  ) {
    return undefined;
  }
  if (fingerprint(rec.options) !== fingerprint(recordedOptions(settings))) return undefined;
  const files = rec.files ?? {};
  if (!files.flow || !files.flowColor || !files.warped) return undefined;
  for (const name of Object.values(files)) {
    try {
      if ((await stat(path.join(outDir, name))).size === 0) return undefined;
    } catch {
      return undefined;
    }
  }
  return rec;
}
