/** Data types of the image-to-flow path's native functions (cpp/napi/match.cpp; signatures in native.ts). */

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
  dis: {
    coarsestScale: number;
    patchSize: number;
    patchStride: number;
    gradIters: number;
    varIters: number;
    /** Spatial propagation of the patch search (DisOptions::spatial_propagation). */
    spatialPropagation: boolean;
  } | null;
  /**
   * flow_texture_mask of the coarse fill (gradient 0: off) and the final fill's flat pixels
   * (MatchOptions::flat_gradient; 0: off).
   */
  texture: { radius: number; gradient: number; flatGradient: number };
}

export interface NativeMatchOptions extends NativeImageStages {
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
  /** Similarity search of the image pipeline (cpp/core/match.cpp similarity_search). */
  similaritySearch?: 'auto' | 'always' | 'off';
}

export interface NativeFlow {
  /** (2, height, width): u then v, pixels. */
  data: Float32Array;
  width: number;
  height: number;
  confidence?: Float32Array;
  occlusion?: Uint8Array;
  timings?: Record<string, number>;
}
