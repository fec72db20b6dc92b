/**
 * gocor's built-in dense descriptor (DAISY-like oriented-gradient histograms with spatial context,
 * 136 channels, unit L2 norm per cell; design and cost in cpp/core/features.cpp and docs/features.md).
 */
import { checkMemory, EXEC_KEYS, execOptions } from './exec';
import { loadImage } from './image';
import { native } from './native';
import type { NativeFeatureLevel } from './native-match';
import { runNative } from './queue';
import type { ExecOptions, FeatureMap, Image } from './types';
import { bool, f32, int, invalid, knownKeys, object, optInt, optObject } from './validate';

/** One level of a pyramid: a FeatureMap `[1, C, height, width]` plus where its cells sit on the image. */
export interface FeatureLevel extends FeatureMap {
  /** Image pixels per cell; cell (i, j) is centred on pixel ((j + 0.5) strideX - 0.5, (i + 0.5) strideY - 0.5). */
  strideX: number;
  strideY: number;
  /** The coarse level matched globally (every cell against every cell); at most one, first. */
  global: boolean;
}

/** Feature maps of one image, global level first (if any), then local levels coarse to fine. */
export interface FeaturePyramid {
  imageWidth: number;
  imageHeight: number;
  levels: FeatureLevel[];
  /** The backend that computed it (extractFeatures: always 'cpu', the descriptor is CPU code). */
  device?: 'cpu' | 'cuda';
}

export interface ExtractFeaturesOptions extends ExecOptions {
  /** Cells per side of the global level (the image is squashed to a square grid), 4..48, default 24. */
  globalSize?: number;
  /** Nominal stride of the finest local level in pixels, 1..32 (power of two), default 4. */
  finestStride?: number;
  /** Nominal stride of the coarsest local level; default: the largest power of two <= 0.75 global cell. */
  coarsestStride?: number;
  /** Include the global level (default true). */
  global?: boolean;
}

export const FEATURE_KEYS = ['globalSize', 'finestStride', 'coarsestStride', 'global'] as const;

export interface FeatureSettings {
  globalSize: number;
  finestStride: number;
  coarsestStride: number;
  withGlobal: boolean;
}

function powerOfTwo(value: unknown, name: string, max: number): number {
  const v = int(value, name, 1, max);
  if ((v & (v - 1)) !== 0) throw invalid(`power of two between 1 and ${max}`, name, value);
  return v;
}

/** Validates the feature options shared by extractFeatures and match. */
export function featureSettings(o: Record<string, unknown>, name: string, finestStride = 4): FeatureSettings {
  return {
    globalSize: optInt(o.globalSize, `${name}.globalSize`, 4, 48, 24),
    finestStride: o.finestStride === undefined ? finestStride : powerOfTwo(o.finestStride, `${name}.finestStride`, 32),
    coarsestStride: o.coarsestStride === undefined ? 0 : powerOfTwo(o.coarsestStride, `${name}.coarsestStride`, 256),
    withGlobal: bool(o.global, `${name}.global`, true),
  };
}

/** Checks an Image (CHW float32, 1..4 channels, finite) and returns its native dims. */
export function checkImage(value: unknown, name: string): { data: Float32Array; C: number; H: number; W: number } {
  const o = object(value, name) as Partial<Image>;
  const C = int(o.channels, `${name}.channels`, 1, 4);
  const H = int(o.height, `${name}.height`, 1, 16384);
  const W = int(o.width, `${name}.width`, 1, 16384);
  const data = f32(o.data, `${name}.data`, C * H * W);
  return { data, C, H, W };
}

/** A path or encoded bytes, to be decoded with loadImage (RGB); anything else is taken for an Image. */
export function isImageSource(value: unknown): value is string | Uint8Array {
  return typeof value === 'string' || value instanceof Uint8Array;
}

export function fromNativeLevel(l: NativeFeatureLevel): FeatureLevel {
  return {
    data: l.data,
    batch: 1,
    channels: l.channels,
    height: l.height,
    width: l.width,
    strideX: l.strideX,
    strideY: l.strideY,
    global: l.global,
  };
}

/**
 * Dense descriptors of an image on the grids the matcher uses: a `globalSize x globalSize` global
 * level and local levels at power-of-two strides down to `finestStride`. Each level is a FeatureMap
 * `[1, 136, height, width]`, unit L2 norm per cell. Deterministic; runs off the event loop.
 */
export async function extractFeatures(
  image: Image | string | Buffer | Uint8Array,
  opts?: ExtractFeaturesOptions,
): Promise<FeaturePyramid> {
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', [...FEATURE_KEYS, ...EXEC_KEYS]);
  const s = featureSettings(o, 'options');
  const { signal, ...exec } = execOptions(o, 'options');
  // An Image goes to the native call before the first await, which copies it (the caller may
  // change it once this returns); a decoded image is ours.
  const d = checkImage(isImageSource(image) ? await loadImage(image) : image, 'image');
  const dims = { C: d.C, H: d.H, W: d.W };
  const job = { ...exec, ...s };
  checkMemory(
    native().estimateBytes('extractFeatures', dims, job),
    `features of a ${d.W}x${d.H} image`,
    'resize the image first (loadImage(..., {resize})) or use a larger finestStride',
  );
  const r = await runNative(() => native().extractFeatures(d.data, dims, job), signal);
  return {
    imageWidth: r.imageWidth,
    imageHeight: r.imageHeight,
    levels: r.levels.map(fromNativeLevel),
    device: r.device,
  };
}
