/**
 * Loads the compiled addon (with `bindings`, which searches build/Release and the node-gyp layout)
 * and gives it an exact type: the facade never calls an untyped native function.
 */
import { GocorError } from './errors';
import type { NativeDims, NativeFlow, NativeMatchOptions, NativePyramid } from './native-match';

export type NativeDevice = 'auto' | 'cpu' | 'cuda';

export interface NativeExec {
  device: NativeDevice;
  /** 0: all threads of gocor's pool. */
  threads: number;
}

/** Every native result says where it ran. */
export interface Ran {
  device: 'cpu' | 'cuda';
}

/**
 * A prepared native call: its inputs were copied into native memory when the binding function
 * returned it, so the caller's arrays may change from then on (cpp/napi/worker.h).
 */
export interface NativeJob<T> {
  /** Runs it off the event loop; once. */
  start(): Promise<T & Ran>;
  /** Before start: releases it. While it runs: it stops at its next stage boundary and rejects with ERR_GOCOR_ABORTED. */
  cancel(): void;
}

export interface NativeDistanceFns {
  label: Float32Array;
  weight: Float32Array;
  maskLogit: Float32Array;
}

export interface NativeGlobalParams extends NativeDistanceFns {
  targetFg: Float32Array;
  targetBg: Float32Array;
  logStepLength: number;
  filterReg: number;
  steplengthReg: number;
  minFilterReg?: number;
  regInterDim: number;
  regOutputDim: number;
  regWeight1: Float32Array;
  regWeight2: Float32Array;
}

export interface NativeLocalParams extends NativeDistanceFns {
  scaling: number;
  logStepLength: number;
  filterReg: number;
  minFilterReg?: number;
}

export interface NativeIterDiag {
  batch: number;
  iter: number;
  lossRef: number;
  lossQuery: number;
  lossReg: number;
  gradNorm: number;
  alpha: number;
  alphaMin: number;
  alphaMax: number;
}

export interface NativeGocorResult {
  volume: Float32Array;
  filter?: Float32Array;
  diagnostics?: NativeIterDiag[];
}

export interface NativeBackends {
  cpu: { simd: 'avx512' | 'avx2' | 'portable'; threads: number };
  cuda: {
    compiled: boolean;
    available: boolean;
    devices: number;
    reason: string;
    name?: string;
    computeCapability?: string;
    totalMemory?: number;
    runtimeVersion?: number;
    driverVersion?: number;
  };
}

export interface NativeBuildInfo {
  buildSystem: string;
  cuda: boolean;
  napiVersion: number;
  compiler: string;
}

export interface NativeBinding {
  backends(): NativeBackends;
  buildInfo(): NativeBuildInfo;
  corrGlobal(
    reference: Float32Array,
    query: Float32Array,
    dims: { B: number; C: number; H: number; W: number; Hq: number; Wq: number },
    exec: NativeExec,
  ): NativeJob<{ data: Float32Array }>;
  corrLocal(
    reference: Float32Array,
    query: Float32Array,
    dims: { B: number; C: number; H: number; W: number; R: number },
    exec: NativeExec,
  ): NativeJob<{ data: Float32Array }>;
  gocorGlobal(
    reference: Float32Array,
    query: Float32Array,
    dims: { B: number; C: number; H: number; W: number },
    params: NativeGlobalParams,
    opts: NativeExec & { numIter: number; applyQueryLoss: boolean; diagnostics: boolean; returnFilter: boolean },
  ): NativeJob<NativeGocorResult>;
  gocorLocal(
    reference: Float32Array,
    query: Float32Array,
    dims: { B: number; C: number; H: number; W: number },
    params: NativeLocalParams,
    opts: NativeExec & { numIter: number; searchRadius: number; diagnostics: boolean; returnFilter: boolean },
  ): NativeJob<NativeGocorResult>;
  defaultGlobalParams(channels: number, seed: number): NativeGlobalParams;
  defaultLocalParams(): NativeLocalParams;
  extractFeatures(
    image: Float32Array,
    dims: NativeDims,
    opts: NativeExec & { globalSize: number; finestStride: number; coarsestStride: number; withGlobal: boolean },
  ): NativeJob<NativePyramid>;
  matchImages(
    a: Float32Array,
    dimsA: NativeDims,
    b: Float32Array,
    dimsB: NativeDims,
    opts: NativeMatchOptions & NativeExec,
  ): NativeJob<NativeFlow>;
  matchPyramids(a: NativePyramid, b: NativePyramid, opts: NativeMatchOptions & NativeExec): NativeJob<NativeFlow>;
  warpImage(
    b: Float32Array,
    dimsB: NativeDims,
    flow: Float32Array,
    dimsFlow: NativeDims,
    exec: NativeExec,
  ): NativeJob<{ data: Float32Array; mask: Float32Array }>;
  resizeFlow(flow: Float32Array, from: NativeDims, to: NativeDims, exec: NativeExec): NativeJob<{ data: Float32Array }>;
}

let cached: NativeBinding | undefined;

/** The addon, loaded once on first use. A missing or broken build is a GocorError, not a crash. */
export function native(): NativeBinding {
  if (cached) return cached;
  try {
    // Loaded on first use rather than imported, so that a missing build is a GocorError at the
    // first call (not an exception while importing gocor); module_root is this package's root.
    const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => unknown;
    const path = require('node:path') as typeof import('node:path');
    cached = bindings({ bindings: 'gocor', module_root: path.join(__dirname, '..') }) as NativeBinding;
    return cached;
  } catch (err) {
    throw new GocorError(
      'ERR_GOCOR_NATIVE_LOAD',
      `gocor's native addon could not be loaded (${(err as Error).message}); run \`npm rebuild gocor\` or see the README's build section`,
      { cause: err },
    );
  }
}
