/**
 * Dense matching: from two images (or two feature pyramids / feature maps) to a flow field.
 *
 * Convention (everywhere in gocor): the flow lives on the grid of `a` and points into `b`:
 * `a(x)` corresponds to `b(x + flow(x))`; x to the right, y down, pixel centres at integer coordinates.
 *
 * Pipeline (cpp/core/match.cpp, one native call): global GOCor (or plain global correlation) between
 * the `globalSize^2` global levels, arg-max with a sub-cell parabola fit; then, coarse to fine, b's
 * features warped by the upsampled flow and a local GOCor (or local correlation) volume of radius 4
 * refines it; a symmetric sub-cell refinement at the finest level; bilinear upsampling to full size.
 */
import { GocorError } from './errors';
import { checkMemory, EXEC_KEYS, execOptions } from './exec';
import { featureMap } from './featuremap';
import {
  checkImage,
  FEATURE_KEYS,
  type FeatureLevel,
  type FeaturePyramid,
  featureSettings,
  isImageSource,
} from './features';
import { loadImage } from './image';
import { type NativeExec, native } from './native';
import type { NativeImageStages, NativeMatchOptions, NativePyramid } from './native-match';
import { runNative } from './queue';
import type { ExecOptions, FeatureMap, Image } from './types';
import { bool, int, invalid, knownKeys, num, object, oneOf, optInt, optObject } from './validate';

/** A dense flow field. `data` is `[2, height, width]` (u plane then v plane), in pixels of the grid it lives on. */
export interface Flow {
  data: Float32Array;
  width: number;
  height: number;
  /** Per-pixel confidence in [0, 1], `[height, width]` (absent with confidence: 'none'). */
  confidence?: Float32Array;
}

/** A flow from `match`, with the backend that computed it. */
export interface MatchResult extends Flow {
  device: 'cpu' | 'cuda';
  /**
   * `[height, width]`, 1 where the final forward-backward check failed: occluded or out of view in
   * b, or a match that the reverse flow does not confirm. The flow there is interpolated from
   * consistent neighbours (edge-aware). Present when `match` gets images and `quality` is not 'fast'.
   */
  occlusion?: Uint8Array;
  /** Wall time of each pipeline stage in milliseconds (images only; both directions summed). */
  timings?: Record<string, number>;
}

/** Speed/accuracy presets of `match` on images (bench/accuracy-results.md has their figures). */
export type MatchQuality = 'fast' | 'balanced' | 'best';

export interface MatchOptions extends ExecOptions {
  /**
   * 'balanced' (default): GOCor coarse-to-fine to stride 16 (3 local iterations) in both
   * directions, forward-backward check, edge-aware interpolation of the rejected pixels, DIS
   * refinement at pixel level, a second check and fill (occlusion mask). 'best': local levels down
   * to stride 4 (7 iterations, 3 sub-cell rounds) and a denser DIS search.
   * 'fast': one direction, coarse levels to stride 16, a light DIS; no occlusion mask.
   * The other options below override the preset's values.
   */
  quality?: MatchQuality;
  /** 'gocor' (default) or 'correlation': the same pipeline with GOCor volumes or plain correlation. */
  method?: 'gocor' | 'correlation';
  /** Global grid size (cells per side), 4..48, default 24. */
  globalSize?: number;
  /** Finest local stride in pixels (power of two 1..32); default from `quality` (16; 'best' 4, 'fast' 16). */
  finestStride?: number;
  /** Coarsest local stride (power of two); default from the global cell size. */
  coarsestStride?: number;
  /** false: skip the global level and start from zero flow (small motions only). Default true. */
  global?: boolean;
  /**
   * GOCor iterations: one number for both stages, or global (0..20, default 3) and local (0..20,
   * default 3; 'best' 7, the authors' evaluation setting, spec 6).
   */
  numIter?: number | { global?: number; local?: number };
  /** Global GOCor's query-frame term (spec 4.4), default true. */
  applyQueryLoss?: boolean;
  /** Symmetric sub-cell refinement rounds at the finest level, 0..10, default 0 ('best' 3). */
  refineIter?: number;
  /** 3x3 median of the flow between levels, default true. */
  median?: boolean;
  /** Seed of global GOCor's regulariser initial weights, default 0. */
  seed?: number;
  /**
   * GOCor's parameters: 'fitted' (default) = fitted to the built-in descriptor by
   * bench/fit-params.js on images the accuracy benchmark does not use; 'initial' = the official
   * initial values (spec 4.7 / 5.6), i.e. untrained GOCor.
   */
  gocorParams?: 'fitted' | 'initial';
  /** Resize the flow to this size, vectors rescaled accordingly. Default: the size of a. */
  outputShape?: { width: number; height: number };
  /**
   * 'peak' (default): peak ratio of the finest local volume; 'forwardBackward': consistency of the
   * final a->b and b->a flows (exp(-e^2 / 4.5); free with images unless quality is 'fast', a second
   * match otherwise); 'none'.
   */
  confidence?: 'none' | 'peak' | 'forwardBackward';
  /**
   * Large rotations and zooms between a and b (images, not 'fast'): 'auto' (default) checks the
   * coarse flows and, when few of them are even roughly forward-backward consistent, tries 84
   * rotations (30 degree steps) and zooms (1/2.8..2.8) of b at a coarse grid; the best one, when it
   * clearly beats b as it is, warps b and the pipeline runs again on the warped b (the flow still
   * points into the original b). 'always': search on every pair; false: never. Costs nothing when
   * the check passes; about 1-3 s per pair when the search runs.
   */
  similaritySearch?: 'auto' | 'always' | false;
}

const MATCH_KEYS = [
  'quality',
  'method',
  ...FEATURE_KEYS,
  'numIter',
  'applyQueryLoss',
  'refineIter',
  'median',
  'seed',
  'gocorParams',
  'outputShape',
  'confidence',
  'similaritySearch',
  ...EXEC_KEYS,
] as const;

// The image stages of 'balanced' and 'best': both fills, DIS with 8-pixel patches every 3 pixels
// and 12 Gauss-Newton steps ('best': every 2 pixels, 16 steps), with spatial propagation (every
// preset: Sintel 80.8 -> 86.9 PCK-5, aloe 72.3 -> 84.5, chairs 90.7 -> 95.6). Since propagation
// the denser search of 'best' gains nothing on the accuracy benchmark (real pairs 89.6 vs 89.5,
// chairs 95.4 vs 95.6 PCK-5) for 2.3x the time: a preset to revisit.
const fullImageStages = (patchStride: number, gradIters: number): Omit<NativeImageStages, 'texture'> => ({
  fill: true,
  finalFill: true,
  dis: { coarsestScale: 3, patchSize: 8, patchStride, gradIters, varIters: 8, spatialPropagation: true },
});

// What each quality preset sets (the image stages are native options with no public knob; the
// accuracy benchmark measured these values, bench/accuracy-results.md).
const PRESETS: Record<
  MatchQuality,
  {
    finestStride: number;
    numIterLocal: number;
    refineIter: number;
    image: Omit<NativeImageStages, 'texture'>;
  }
> = {
  fast: {
    finestStride: 16,
    numIterLocal: 3,
    refineIter: 0,
    image: {
      fill: false,
      finalFill: false,
      dis: { coarsestScale: 3, patchSize: 8, patchStride: 4, gradIters: 8, varIters: 1, spatialPropagation: true },
    },
  },
  // Local levels to stride 16 with 3 GOCor iterations and no sub-cell rounds: the DIS refinement
  // with propagation (every 3 px, its own sub-pixel search) redoes what stride 8, 7 iterations and
  // the rounds added. Real pairs 89.5 -> 89.4 PCK-5, PCK-1 81.0 -> 80.9, AEPE 20.7 -> 18.2 px, every
  // family target kept; chairs unchanged within 0.2; about 22 % less time per pair. A sparser DIS
  // (patches every 4 px, or 8 Gauss-Newton steps) is cheaper still but loses ETH3D (99.9 -> 97.6 / 98.9).
  balanced: { finestStride: 16, numIterLocal: 3, refineIter: 0, image: fullImageStages(3, 12) },
  best: { finestStride: 4, numIterLocal: 7, refineIter: 3, image: fullImageStages(2, 16) },
};

// Local volumes are box-aggregated over 5x5 cells before the arg-max (flow_volume_aggregate).
const AGGREGATE_RADIUS = 2;
// The coarse fill also interpolates pixels without 2-D structure (flow_texture_mask): window 9x9,
// smaller eigenvalue of the structure tensor >= 0.01^2 (image in [0, 1]). The final fill does not
// seed from flat pixels: gradient magnitude (central differences) below 0.002, about half a grey
// level per pixel (a saturated or quantised-flat area, where every flow fits).
const TEXTURE = { radius: 4, gradient: 0.01, flatGradient: 0.002 };

interface Settings {
  native: NativeMatchOptions & NativeExec;
  signal?: AbortSignal;
  coarsestStride: number;
}

function settings(opts: unknown): Settings {
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', MATCH_KEYS);
  const quality = oneOf(o.quality, 'options.quality', ['fast', 'balanced', 'best'] as const, 'balanced');
  const preset = PRESETS[quality];
  const f = featureSettings(o, 'options', preset.finestStride);
  let numIterGlobal = 3;
  let numIterLocal = preset.numIterLocal;
  if (typeof o.numIter === 'number') {
    numIterGlobal = optInt(o.numIter, 'options.numIter', 0, 20, 3);
    numIterLocal = numIterGlobal;
  } else if (o.numIter !== undefined) {
    if (typeof o.numIter !== 'object' || o.numIter === null || Array.isArray(o.numIter)) {
      throw invalid('integer between 0 and 20 or {global, local}', 'options.numIter', o.numIter);
    }
    const n = o.numIter as Record<string, unknown>;
    knownKeys(n, 'options.numIter', ['global', 'local']);
    numIterGlobal = optInt(n.global, 'options.numIter.global', 0, 20, 3);
    numIterLocal = optInt(n.local, 'options.numIter.local', 0, 20, preset.numIterLocal);
  }
  let outWidth = 0;
  let outHeight = 0;
  if (o.outputShape !== undefined) {
    const s = object(o.outputShape, 'options.outputShape');
    knownKeys(s, 'options.outputShape', ['width', 'height']);
    outWidth = int(s.width, 'options.outputShape.width', 1, 16384);
    outHeight = int(s.height, 'options.outputShape.height', 1, 16384);
  }
  const seed = o.seed === undefined ? 0 : num(o.seed, 'options.seed', 0, Number.MAX_SAFE_INTEGER);
  if (!Number.isInteger(seed)) throw invalid('integer between 0 and 2^53-1', 'options.seed', o.seed);
  const { signal, ...exec } = execOptions(o, 'options');
  return {
    signal,
    coarsestStride: f.coarsestStride,
    native: {
      ...exec,
      method: oneOf(o.method, 'options.method', ['gocor', 'correlation'] as const, 'gocor'),
      globalSize: f.globalSize,
      finestStride: f.finestStride,
      useGlobal: f.withGlobal,
      numIterGlobal,
      numIterLocal,
      applyQueryLoss: bool(o.applyQueryLoss, 'options.applyQueryLoss', true),
      refineIter: optInt(o.refineIter, 'options.refineIter', 0, 10, preset.refineIter),
      ...preset.image,
      aggregateRadius: AGGREGATE_RADIUS,
      texture: TEXTURE,
      median: bool(o.median, 'options.median', true),
      seed,
      fittedParams: oneOf(o.gocorParams, 'options.gocorParams', ['fitted', 'initial'] as const, 'fitted') === 'fitted',
      outWidth,
      outHeight,
      confidence: oneOf(o.confidence, 'options.confidence', ['none', 'peak', 'forwardBackward'] as const, 'peak'),
      similaritySearch: similaritySearch(o.similaritySearch),
    },
  };
}

// options.similaritySearch: 'auto' (default) | 'always' | false -> the native 'auto' | 'always' | 'off'.
function similaritySearch(v: unknown): 'auto' | 'always' | 'off' {
  if (v === undefined || v === 'auto') return 'auto';
  if (v === 'always') return 'always';
  if (v === false) return 'off';
  throw invalid("'auto', 'always' or false", 'options.similaritySearch', v);
}

function isPyramid(v: unknown): v is FeaturePyramid {
  return typeof v === 'object' && v !== null && Array.isArray((v as FeaturePyramid).levels);
}

function checkPyramid(value: FeaturePyramid, name: string): NativePyramid {
  const imageWidth = int(value.imageWidth, `${name}.imageWidth`, 1, 1 << 16);
  const imageHeight = int(value.imageHeight, `${name}.imageHeight`, 1, 1 << 16);
  if (value.levels.length === 0 || value.levels.length > 16) {
    throw invalid('1 to 16 levels', `${name}.levels`, value.levels);
  }
  const levels = value.levels.map((l, i) => {
    const at = `${name}.levels[${i}]`;
    const d = featureMap(l, at);
    if (d.B !== 1) throw invalid('batch 1', `${at}.batch`, d.B);
    const global = bool(l.global, `${at}.global`, false);
    if (global && i !== 0) throw invalid('the global level first', `${at}.global`, l.global);
    return {
      data: d.data,
      channels: d.C,
      height: d.H,
      width: d.W,
      strideX: num(l.strideX, `${at}.strideX`, 1e-6, 1e6),
      strideY: num(l.strideY, `${at}.strideY`, 1e-6, 1e6),
      global,
    };
  });
  return { imageWidth, imageHeight, levels };
}

function samePyramidLayout(a: NativePyramid, b: NativePyramid): void {
  if (a.levels.length !== b.levels.length) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `a and b need the same number of levels, but received ${a.levels.length} and ${b.levels.length}`,
    );
  }
  a.levels.forEach((la, i) => {
    const lb = b.levels[i] as (typeof b.levels)[number];
    if (la.channels !== lb.channels || la.global !== lb.global) {
      throw new GocorError('ERR_GOCOR_SHAPE', `level ${i} of a and b differ in channels or kind`);
    }
    if (la.global && (la.width !== lb.width || la.height !== lb.height)) {
      throw new GocorError(
        'ERR_GOCOR_SHAPE',
        `the global levels of a and b must have the same grid, but received ${la.height}x${la.width} and ${lb.height}x${lb.width}`,
      );
    }
  });
}

/**
 * Dense flow from image `a` to image `b` (each an Image, a file path or an encoded Buffer; or both
 * FeaturePyramids from extractFeatures). Returns `{ data: [2, H, W], width, height, confidence, device }`
 * on a's pixel grid (or `outputShape`), with a(x) ~ b(x + flow(x)). a and b may differ in size.
 */
export async function match(
  a: Image | string | Buffer | Uint8Array | FeaturePyramid,
  b: Image | string | Buffer | Uint8Array | FeaturePyramid,
  opts?: MatchOptions,
): Promise<MatchResult> {
  const s = settings(opts);
  if (isPyramid(a) || isPyramid(b)) {
    if (!isPyramid(a) || !isPyramid(b)) {
      throw new GocorError('ERR_GOCOR_INVALID_ARG', 'match: pass two FeaturePyramids or two images, not one of each');
    }
    const pa = checkPyramid(a, 'a');
    const pb = checkPyramid(b, 'b');
    samePyramidLayout(pa, pb);
    checkMemory(
      native().estimateBytes('matchPyramids', { a: pa, b: pb }, s.native),
      `matching feature pyramids of ${pa.imageWidth}x${pa.imageHeight} and ${pb.imageWidth}x${pb.imageHeight} images`,
      'use smaller feature maps or outputShape',
    );
    return runNative(() => native().matchPyramids(pa, pb, s.native), s.signal);
  }
  if (s.coarsestStride !== 0) {
    throw new GocorError(
      'ERR_GOCOR_INVALID_ARG',
      'options.coarsestStride applies to extractFeatures and matchFeatures only',
    );
  }
  let ia = a as Image;
  let ib = b as Image;
  if (isImageSource(a) || isImageSource(b)) {
    // Decoding awaits, so an Image given beside a path is copied first: the native call copies
    // its inputs, but the caller may change an Image as soon as match returns its Promise.
    const own = (v: Image, name: string): Image => {
      const d = checkImage(v, name);
      return { data: d.data.slice(), channels: d.C, height: d.H, width: d.W };
    };
    const [ownA, ownB] = [isImageSource(a) ? undefined : own(a, 'a'), isImageSource(b) ? undefined : own(b, 'b')];
    [ia, ib] = await Promise.all([
      ownA ?? loadImage(a as string | Uint8Array),
      ownB ?? loadImage(b as string | Uint8Array),
    ]);
  }
  const da = checkImage(ia, 'a');
  const db = checkImage(ib, 'b');
  const dims = { a: { C: da.C, H: da.H, W: da.W }, b: { C: db.C, H: db.H, W: db.W } };
  checkMemory(
    native().estimateBytes('matchImages', dims, s.native),
    `matching a ${da.W}x${da.H} and a ${db.W}x${db.H} image`,
    'resize the images first (loadImage(..., {resize})), lower globalSize or use a smaller outputShape',
  );
  return runNative(() => native().matchImages(da.data, dims.a, db.data, dims.b, s.native), s.signal);
}

// Separable triangle-filter resampling of (C, H, W) to (C, h, w), antialiased when shrinking.
function resample(src: Float32Array, C: number, H: number, W: number, h: number, w: number): Float32Array {
  const axis = (S: number, s: number) => {
    const scale = S / s;
    const support = Math.max(1, scale);
    const taps: { i: number; w: number }[][] = [];
    for (let o = 0; o < s; o++) {
      const c = (o + 0.5) * scale - 0.5;
      const row: { i: number; w: number }[] = [];
      let sum = 0;
      for (let i = Math.max(0, Math.floor(c - support) + 1); i <= Math.min(S - 1, Math.ceil(c + support) - 1); i++) {
        const wt = Math.max(0, 1 - Math.abs(i - c) / support);
        if (wt > 0) row.push({ i, w: wt });
        sum += wt;
      }
      if (row.length === 0) {
        row.push({ i: Math.min(S - 1, Math.max(0, Math.round(c))), w: 1 });
        sum = 1;
      }
      for (const t of row) t.w /= sum;
      taps.push(row);
    }
    return taps;
  };
  const tx = axis(W, w);
  const ty = axis(H, h);
  const mid = new Float32Array(C * H * w);
  for (let r = 0; r < C * H; r++) {
    for (let o = 0; o < w; o++) {
      let acc = 0;
      for (const t of tx[o] as { i: number; w: number }[]) acc += t.w * (src[r * W + t.i] as number);
      mid[r * w + o] = acc;
    }
  }
  const out = new Float32Array(C * h * w);
  for (let c = 0; c < C; c++) {
    for (let o = 0; o < h; o++) {
      const dst = (c * h + o) * w;
      for (const t of ty[o] as { i: number; w: number }[]) {
        const srow = (c * H + t.i) * w;
        for (let x = 0; x < w; x++) out[dst + x] = (out[dst + x] as number) + t.w * (mid[srow + x] as number);
      }
    }
  }
  return out;
}

// x / sqrt(sum_c x_c^2 + 1e-6) per cell, as GLU-Net does for the global features.
function l2normalizeCells(data: Float32Array, C: number, N: number): Float32Array {
  for (let n = 0; n < N; n++) {
    let s = 1e-6;
    for (let c = 0; c < C; c++) s += (data[c * N + n] as number) ** 2;
    const inv = 1 / Math.sqrt(s);
    for (let c = 0; c < C; c++) data[c * N + n] = (data[c * N + n] as number) * inv;
  }
  return data;
}

/**
 * Builds the matcher's pyramid from one caller-provided feature map `[1, C, H, W]`: a global level
 * (the map resampled to G x G, G = min(globalSize, H, W), L2-normalised per cell), local levels of the
 * map average-pooled by powers of two down to the map itself. Strides are in map cells, so the
 * resulting flow is measured in cells of the map.
 */
export function pyramidFromFeatureMap(
  map: FeatureMap,
  opts: { globalSize: number; coarsestStride?: number; global?: boolean; minSide?: number },
): FeaturePyramid {
  const d = featureMap(map, 'map', true);
  if (d.B !== 1) throw invalid('batch 1', 'map.batch', d.B);
  const levels: FeatureLevel[] = [];
  // A level of `data` (C, height, width), its strides in cells of the map.
  const level = (data: Float32Array, height: number, width: number, global: boolean): FeatureLevel => ({
    data,
    batch: 1,
    channels: d.C,
    height,
    width,
    strideX: d.W / width,
    strideY: d.H / height,
    global,
  });
  const G = Math.min(opts.globalSize, opts.minSide ?? Math.min(d.H, d.W));
  if (opts.global !== false) {
    levels.push(level(l2normalizeCells(resample(d.data, d.C, d.H, d.W, G, G), d.C, G * G), G, G, true));
  }
  let coarsest = opts.coarsestStride ?? 0;
  if (coarsest === 0) {
    const cell = Math.sqrt(d.H * d.W) / G;
    coarsest = 1;
    while (coarsest * 2 <= 0.75 * cell) coarsest *= 2;
  }
  for (let s = coarsest; s >= 1; s /= 2) {
    const h = Math.max(1, Math.round(d.H / s));
    const w = Math.max(1, Math.round(d.W / s));
    levels.push(level(s === 1 ? d.data : resample(d.data, d.C, d.H, d.W, h, w), h, w, false));
  }
  return { imageWidth: d.W, imageHeight: d.H, levels };
}

/**
 * Dense flow between two caller-provided feature maps (`[1, C, H, W]` each, e.g. from your own
 * backbone or `loadNpy`), same channels, sizes may differ. The flow lives on a's feature grid and is
 * measured in feature cells (`width = a.width`); pass `outputShape` to get it at image size with
 * vectors rescaled. Same options as `match`.
 */
export async function matchFeatures(a: FeatureMap, b: FeatureMap, opts?: MatchOptions): Promise<MatchResult> {
  const s = settings(opts);
  const da = featureMap(a, 'a', true);
  const db = featureMap(b, 'b', true);
  if (da.C !== db.C) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `a and b must have the same number of channels, but received ${da.C} and ${db.C}`,
    );
  }
  const minSide = Math.min(da.H, da.W, db.H, db.W);
  const common = { globalSize: s.native.globalSize, global: s.native.useGlobal, minSide };
  const pa = pyramidFromFeatureMap(a, { ...common, coarsestStride: s.coarsestStride });
  const coarsest = pa.levels.filter((l) => !l.global).length;
  const pb = pyramidFromFeatureMap(b, { ...common, coarsestStride: 2 ** (coarsest - 1) });
  return match(pa, pb, { ...(opts ?? {}), coarsestStride: undefined });
}
