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

export interface NativeMatchOptions {
  method: 'gocor' | 'correlation';
  globalSize: number;
  finestStride: number;
  useGlobal: boolean;
  numIterGlobal: number;
  numIterLocal: number;
  applyQueryLoss: boolean;
  refineIter: number;
  photometricIter: number;
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
}
