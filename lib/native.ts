/**
 * Loads the compiled addon (a local build, found with `bindings`, or the prebuilt platform package)
 * and gives it an exact type: the facade never calls an untyped native function.
 */
import { join } from 'node:path';
import { debuglog } from 'node:util';
import { GocorError } from './errors';
import type { NativeDims, NativeFeatureLevel, NativeFlow, NativeMatchOptions, NativePyramid } from './native-match';

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
  cpu: { simd: 'avx512' | 'avx2' | 'portable'; amx: boolean; threads: number };
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

type CorrGlobalDims = { B: number; C: number; H: number; W: number; Hq: number; Wq: number };
type CorrLocalDims = { B: number; C: number; H: number; W: number; R: number };
type GocorDims = { B: number; C: number; H: number; W: number };
type GocorCall = NativeExec & { numIter: number; diagnostics: boolean; returnFilter: boolean };
type GlobalGocorOptions = GocorCall & { applyQueryLoss: boolean };
type LocalGocorOptions = GocorCall & { searchRadius: number };
type FeatureOptions = NativeExec & {
  globalSize: number;
  finestStride: number;
  coarsestStride: number;
  withGlobal: boolean;
};
type MatchOptions = NativeMatchOptions & NativeExec;
/** A pyramid's shapes (level data is not read). */
type PyramidShape = Omit<NativePyramid, 'levels'> & { levels: Omit<NativeFeatureLevel, 'data'>[] };

export interface NativeBinding {
  backends(): NativeBackends;
  buildInfo(): NativeBuildInfo;
  /** Detaches an array the binding returned: its bytes; 0 if detached already; -1 if not the binding's. */
  dispose(array: ArrayBufferView): number;
  /**
   * Bytes a call would allocate (the binding's copies of its inputs, its outputs and the core's
   * working set), from the same dims and options as the call itself, without its data.
   */
  estimateBytes(op: 'corrGlobal', dims: CorrGlobalDims, exec: NativeExec): number;
  estimateBytes(op: 'corrLocal', dims: CorrLocalDims, exec: NativeExec): number;
  estimateBytes(op: 'gocorGlobal', dims: GocorDims, opts: GlobalGocorOptions): number;
  estimateBytes(op: 'gocorLocal', dims: GocorDims, opts: LocalGocorOptions): number;
  estimateBytes(op: 'extractFeatures', dims: NativeDims, opts: FeatureOptions): number;
  estimateBytes(op: 'matchImages', dims: { a: NativeDims; b: NativeDims }, opts: MatchOptions): number;
  estimateBytes(op: 'matchPyramids', dims: { a: PyramidShape; b: PyramidShape }, opts: MatchOptions): number;
  estimateBytes(op: 'warpImage', dims: { b: NativeDims; flow: NativeDims }, exec: NativeExec): number;
  estimateBytes(op: 'resizeFlow', dims: { from: NativeDims; to: NativeDims }, exec: NativeExec): number;
  corrGlobal(
    reference: Float32Array,
    query: Float32Array,
    dims: CorrGlobalDims,
    exec: NativeExec,
  ): NativeJob<{ data: Float32Array }>;
  corrLocal(
    reference: Float32Array,
    query: Float32Array,
    dims: CorrLocalDims,
    exec: NativeExec,
  ): NativeJob<{ data: Float32Array }>;
  gocorGlobal(
    reference: Float32Array,
    query: Float32Array,
    dims: GocorDims,
    params: NativeGlobalParams,
    opts: GlobalGocorOptions,
  ): NativeJob<NativeGocorResult>;
  gocorLocal(
    reference: Float32Array,
    query: Float32Array,
    dims: GocorDims,
    params: NativeLocalParams,
    opts: LocalGocorOptions,
  ): NativeJob<NativeGocorResult>;
  defaultGlobalParams(channels: number, seed: number): NativeGlobalParams;
  defaultLocalParams(): NativeLocalParams;
  extractFeatures(image: Float32Array, dims: NativeDims, opts: FeatureOptions): NativeJob<NativePyramid>;
  matchImages(
    a: Float32Array,
    dimsA: NativeDims,
    b: Float32Array,
    dimsB: NativeDims,
    opts: MatchOptions,
  ): NativeJob<NativeFlow>;
  matchPyramids(a: NativePyramid, b: NativePyramid, opts: MatchOptions): NativeJob<NativeFlow>;
  warpImage(
    b: Float32Array,
    dimsB: NativeDims,
    flow: Float32Array,
    dimsFlow: NativeDims,
    exec: NativeExec,
  ): NativeJob<{ data: Float32Array; mask: Float32Array }>;
  resizeFlow(flow: Float32Array, from: NativeDims, to: NativeDims, exec: NativeExec): NativeJob<{ data: Float32Array }>;
  // ---- the official networks (cpp/napi/networks.cpp) ----
  networkTensors(model: string): [string, number[]][];
  networkCreate(
    model: string,
    names: string[],
    shapes: number[][],
    data: Float32Array[],
    opts: { numIterGlobal: number; numIterLocal: number },
  ): NativeNetwork;
  networkForward(
    net: NativeNetwork,
    inputs: Float32Array[],
    dims: { B: number; H: number; W: number; H256?: number; W256?: number },
    exec: NativeExec,
  ): NativeJob<{ estimates: NativeFlowEstimate[]; estimates256?: NativeFlowEstimate[] }>;
  networkWorkBytes(net: NativeNetwork, H: number, W: number): number;
  networkRetainedBytes(net: NativeNetwork): number;
  networkDevice(exec: NativeExec): 'cpu' | 'cuda';
  networkMatch(
    net: NativeNetwork,
    a: Float32Array,
    dimsA: NativeDims,
    b: Float32Array,
    dimsB: NativeDims,
    outputShape: { H: number; W: number },
    exec: NativeExec,
  ): NativeJob<{ data: Float32Array; width: number; height: number }>;
}

/** A loaded network (an opaque native handle). */
export type NativeNetwork = { readonly __nativeNetwork: unique symbol };
/** One flow estimate of a network forward: data (B, 2, h, w). */
export interface NativeFlowEstimate {
  h: number;
  w: number;
  data: Float32Array;
}

let cached: NativeBinding | undefined;

// The native code reads GOCOR_SIMD case-insensitively and ignores values it does not know; say so
// once instead of silently running another instruction set than the one asked for.
function warnUnknownSimd(): void {
  const simd = process.env.GOCOR_SIMD;
  if (simd && !['portable', 'avx2', 'avx512'].includes(simd.toLowerCase())) {
    process.emitWarning(
      `GOCOR_SIMD=${JSON.stringify(simd)} is not one of portable, avx2, avx512 and is ignored (CPU kernels: ${cached?.backends().cpu.simd})`,
      { code: 'GOCOR_SIMD_UNKNOWN' },
    );
  }
}

/** The prebuilt addon's package for this machine (an optional dependency of gocor), e.g. `@gocor/linux-x64`. */
export const PLATFORM_PACKAGE = `@gocor/${process.platform}-${process.arch}`;

/** The command that builds the addon from source inside an installed gocor (scripts/install.js). */
export const BUILD_FROM_SOURCE = 'npx gocor-build';

const debug = debuglog('gocor');

function localReason(err: unknown): string {
  const line = firstLine(err);
  return /Could not locate the bindings file/.test(line) ? 'no build/Release/gocor.node' : line;
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0] as string;
}

/**
 * The addon, loaded once on first use. A local build (built from source in this package's folder:
 * the cmake-js/node-gyp layouts that `bindings` searches) comes first, so that building from source
 * takes effect; then the prebuilt platform package. If neither loads, the GocorError names both
 * and the build-from-source command. Never a crash.
 */
export function native(): NativeBinding {
  if (cached) return cached;
  // Loaded on first use rather than imported, so that a missing build is a GocorError at the
  // first call (not an exception while importing gocor); module_root is this package's root.
  const root = join(__dirname, '..');
  let localError: unknown;
  try {
    const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => unknown;
    cached = bindings({ bindings: 'gocor', module_root: root }) as NativeBinding;
    debug('native addon: local build under %s', root);
  } catch (err) {
    localError = err;
  }
  if (!cached) {
    try {
      const file = require.resolve(`${PLATFORM_PACKAGE}/gocor.node`);
      cached = require(file) as NativeBinding;
      debug('native addon: prebuilt %s', file);
    } catch (err) {
      const missing = (err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND';
      throw new GocorError(
        'ERR_GOCOR_NATIVE_LOAD',
        `gocor's native addon could not be loaded: the prebuilt package ${PLATFORM_PACKAGE} ${
          missing
            ? 'is not installed (an optional dependency: installed with --omit=optional, or no prebuilt exists for this platform)'
            : `failed to load (${firstLine(err)})`
        }, and there is no usable local build under ${root} (${localReason(localError)}). Install ${PLATFORM_PACKAGE} or build from source: ${BUILD_FROM_SOURCE} (cmake-js, or node-gyp; see the README's build section)`,
        { cause: err },
      );
    }
  }
  warnUnknownSimd();
  return cached;
}
