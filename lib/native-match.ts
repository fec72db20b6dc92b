/** Exact types of the native functions of the image-to-flow path (cpp/napi/match.cpp). */
import type { NativeExec } from './native';

export interface NativeDims {
  C: number;
  H: number;
  W: number;
}

export interface NativeFeatureLevel {
  /** (channels, height, width), float32. */
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
  /** Source pixels per cell; cell (i, j) is centred on pixel ((j + 0.5) strideX - 0.5, (i + 0.5) strideY - 0.5). */
  strideX: number;
  strideY: number;
  global: boolean;
}

export interface NativePyramid {
  imageWidth: number;
  imageHeight: number;
  levels: NativeFeatureLevel[];
}

/** The image stages of matchImages (cpp/core/match.h): fills, DIS refinement. */
export interface NativeImageStages {
  /** Forward-backward check + edge-aware interpolation of the coarse flows (both directions matched). */
  fill: boolean;
  /** Check + interpolation of the refined flow (occlusion mask). */
  finalFill: boolean;
  /** DIS refinement (flow_refine_dis); null: none. */
  dis: { coarsestScale: number; patchSize: number; patchStride: number; gradIters: number; varIters: number } | null;
  /** flow_texture_mask of the coarse fill; gradient 0: off. */
  texture: { radius: number; gradient: number };
}

export interface NativeMatchOptions extends NativeExec, NativeImageStages {
  method: 'gocor' | 'correlation';
  globalSize: number;
  finestStride: number;
  useGlobal: boolean;
  numIterGlobal: number;
  numIterLocal: number;
  applyQueryLoss: boolean;
  refineIter: number;
  /** Box aggregation radius of the local volumes (cells). */
  aggregateRadius: number;
  median: boolean;
  seed: number;
  fittedParams: boolean;
  /** 0: the size of a. */
  outWidth: number;
  outHeight: number;
  confidence: 'none' | 'peak' | 'forwardBackward';
}

export interface NativeFlow {
  /** (2, height, width): u then v, pixels. */
  data: Float32Array;
  width: number;
  height: number;
  confidence?: Float32Array;
  occlusion?: Uint8Array;
  timings?: Record<string, number>;
  device: 'cpu' | 'cuda';
}

export interface NativeMatch {
  extractFeatures(
    image: Float32Array,
    dims: NativeDims,
    opts: NativeExec & { globalSize: number; finestStride: number; coarsestStride: number; withGlobal: boolean },
  ): Promise<NativePyramid>;
  matchImages(
    a: Float32Array,
    dimsA: NativeDims,
    b: Float32Array,
    dimsB: NativeDims,
    opts: NativeMatchOptions,
  ): Promise<NativeFlow>;
  matchPyramids(a: NativePyramid, b: NativePyramid, opts: NativeMatchOptions): Promise<NativeFlow>;
  warpImage(
    b: Float32Array,
    dimsB: NativeDims,
    flow: Float32Array,
    dimsFlow: NativeDims,
    exec: NativeExec,
  ): Promise<{ data: Float32Array; mask: Float32Array }>;
  resizeFlow(flow: Float32Array, from: NativeDims, to: NativeDims, exec: NativeExec): Promise<Float32Array>;
}
