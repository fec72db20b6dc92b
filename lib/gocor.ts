/** GOCor's optimised correlation volumes: GlobalGOCor (GLU-Net-GOCor) and LocalGOCor (PWC-Net-GOCor). */
import { GocorError } from './errors';
import { checkMemory, execOptions } from './exec';
import { type Dims, featureMap, sameBatchAndChannels } from './featuremap';
import { type NativeExec, type NativeIterDiag, native } from './native';
import {
  defaultGlobalParams,
  defaultLocalParams,
  type GlobalParams,
  type GocorParams,
  type LocalParams,
} from './params';
import { runNative } from './queue';
import type { ExecOptions, FeatureMap, Volume } from './types';
import { bool, f32, int, invalid, knownKeys, MAX_VALUE, num, optInt, optObject } from './validate';

/**
 * Per-iteration figures of the internal optimisation: `iter` counts from 0 (the first step); losses,
 * gradient norm and step length are those of that step, evaluated before its update.
 */
export type IterationDiagnostics = NativeIterDiag;

/** A GOCor volume, optionally with diagnostics and the final filters. */
export interface GocorResult extends Volume {
  /** With `{diagnostics: true}`: one entry per batch element and iteration. */
  diagnostics?: IterationDiagnostics[];
  /** With `{returnFilter: true}`: global (B, H*W, C); local (B, C, H, W). */
  filter?: Float32Array;
}

export interface CallOptions {
  diagnostics?: boolean;
  returnFilter?: boolean;
  signal?: AbortSignal;
}

export interface GlobalGOCorOptions extends Omit<ExecOptions, 'signal'> {
  /**
   * Trained or default parameters: global ones, or what `loadParams` returns (its global part is
   * used); default: the official initial values for the input's channel count (seed 0).
   */
  params?: GlobalParams | GocorParams;
  /** Steepest-descent iterations K, 0..64, default 3. */
  numIter?: number;
  /** The query-frame term `½‖R_θ(w·g)‖²`, default true (as GLU-Net-GOCor). */
  applyQueryLoss?: boolean;
  /** Seed of the default R_θ weights (only when `params` is not given), default 0. */
  seed?: number;
}

export interface LocalGOCorOptions extends Omit<ExecOptions, 'signal'> {
  /**
   * Local parameters, or what `loadParams` returns: its shared local part (`local_corr.*`), or with
   * `level` one of PWC-Net's per-level modules (`local_corr_<level>.*`). Default: the official initial values.
   */
  params?: LocalParams | GocorParams;
  /** With `params` from `loadParams`: the PWC-Net level ('2' ... '6') whose module to use. */
  level?: '2' | '3' | '4' | '5' | '6';
  /** Steepest-descent iterations K, 0..64, default 3. */
  numIter?: number;
  /** Search radius R, 1..16, default 4 (the official size; other radii are gocor's extension). */
  searchRadius?: number;
}

const CALL_KEYS = ['diagnostics', 'returnFilter', 'signal'] as const;

function callOptions(opts: unknown): { diagnostics: boolean; returnFilter: boolean; signal?: AbortSignal } {
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', CALL_KEYS);
  const signal = o.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalid('AbortSignal', 'options.signal', signal);
  return {
    diagnostics: bool(o.diagnostics, 'options.diagnostics', false),
    returnFilter: bool(o.returnFilter, 'options.returnFilter', false),
    signal,
  };
}

function distFns(p: Record<string, unknown>, name: string): void {
  f32(p.label, `${name}.label`, 10);
  f32(p.weight, `${name}.weight`, 10);
  f32(p.maskLogit, `${name}.maskLogit`, 10);
}

// Not part of the public parameter types, but the native side reads it when present.
function minFilterReg(p: object): void {
  const v = (p as { minFilterReg?: unknown }).minFilterReg;
  if (v !== undefined) num(v, 'params.minFilterReg', 0, MAX_VALUE);
}

/** What loadParams returns (no `kind`, a `localLevels` record), told apart from one module's parameters. */
function isFileParams(p: Record<string, unknown>): boolean {
  return p.kind === undefined && typeof p.localLevels === 'object' && p.localLevels !== null;
}

/** The modules a loadParams result holds, for messages. */
function heldModules(p: GocorParams): string {
  const held = [
    ...(p.global ? ['global (corr.corr_module.*)'] : []),
    ...(p.local ? ['local (local_corr.*)'] : []),
    ...Object.keys(p.localLevels).map((l) => `level ${l} (local_corr_${l}.*)`),
  ];
  return held.join(', ');
}

function checkGlobalParams(value: unknown): GlobalParams {
  const o = optObject(value, 'params');
  if (isFileParams(o)) {
    const file = o as unknown as GocorParams;
    if (!file.global)
      throw new GocorError(
        'ERR_GOCOR_PARAMS',
        `params hold no global GOCor module, only ${heldModules(file)}; use LocalGOCor for local modules`,
      );
    return checkGlobalParams(file.global);
  }
  const p = o as unknown as GlobalParams;
  if (p.kind !== 'global') throw invalid("global parameters (kind: 'global')", 'params', value);
  const I = int(p.regInterDim, 'params.regInterDim', 1, 256);
  const O = int(p.regOutputDim, 'params.regOutputDim', 1, 256);
  f32(p.targetFg, 'params.targetFg');
  f32(p.targetBg, 'params.targetBg', p.targetFg.length);
  f32(p.regWeight1, 'params.regWeight1', I * 9);
  f32(p.regWeight2, 'params.regWeight2', O * I * 9);
  num(p.logStepLength, 'params.logStepLength', -50, 50);
  num(p.filterReg, 'params.filterReg', -MAX_VALUE, MAX_VALUE);
  num(p.steplengthReg, 'params.steplengthReg', 0, MAX_VALUE);
  minFilterReg(p);
  distFns(p as unknown as Record<string, unknown>, 'params');
  return p;
}

const LEVELS = ['2', '3', '4', '5', '6'] as const;

function checkLocalParams(value: unknown, level: unknown): LocalParams {
  const o = optObject(value, 'params');
  if (level !== undefined && !LEVELS.includes(level as (typeof LEVELS)[number]))
    throw invalid(`one of ${LEVELS.map((l) => `'${l}'`).join(', ')}`, 'options.level', level);
  if (isFileParams(o)) {
    const file = o as unknown as GocorParams;
    const picked = level === undefined ? file.local : file.localLevels[level as string];
    if (!picked) {
      const want =
        level === undefined ? 'shared local GOCor module (local_corr.*)' : `level ${level} (local_corr_${level}.*)`;
      const hint =
        level === undefined && Object.keys(file.localLevels).length > 0 ? `; pick one with options.level` : '';
      throw new GocorError('ERR_GOCOR_PARAMS', `params hold no ${want}, only ${heldModules(file)}${hint}`);
    }
    return checkLocalParams(picked, undefined);
  }
  if (level !== undefined)
    throw new GocorError(
      'ERR_GOCOR_INVALID_ARG',
      `options.level picks a module of the parameters loadParams returns, but options.params are one module's (kind: ${describeKind(o)})`,
    );
  const p = o as unknown as LocalParams;
  if (p.kind !== 'local') throw invalid("local parameters (kind: 'local')", 'params', value);
  num(p.scaling, 'params.scaling', -MAX_VALUE, MAX_VALUE);
  num(p.logStepLength, 'params.logStepLength', -50, 50);
  num(p.filterReg, 'params.filterReg', -MAX_VALUE, MAX_VALUE);
  minFilterReg(p);
  distFns(p as unknown as Record<string, unknown>, 'params');
  return p;
}

function describeKind(o: Record<string, unknown>): string {
  return typeof o.kind === 'string' ? `'${o.kind}'` : String(o.kind);
}

function result(
  kind: 'global' | 'local',
  shape: number[],
  r: { volume: Float32Array; filter?: Float32Array; diagnostics?: NativeIterDiag[]; device: 'cpu' | 'cuda' },
): GocorResult {
  const out: GocorResult = { data: r.volume, shape, kind, device: r.device };
  if (r.diagnostics) out.diagnostics = r.diagnostics;
  if (r.filter) out.filter = r.filter;
  return out;
}

/**
 * The inputs of one GOCor call: reference, query (B,C,H,W) checked as feature maps of one batch,
 * channel count and grid (`needs` and `hint` frame the message of a grid mismatch), and the call's
 * options. Returns both maps, their common dims, the signal and the per-call flags.
 */
function gocorInputs(
  reference: FeatureMap,
  query: FeatureMap,
  opts: CallOptions | undefined,
  needs: string,
  hint = '',
) {
  const { signal, ...flags } = callOptions(opts);
  const ref = featureMap(reference, 'reference');
  const qry = featureMap(query, 'query');
  sameBatchAndChannels(ref, qry);
  if (ref.H !== qry.H || ref.W !== qry.W) {
    throw new GocorError('ERR_GOCOR_SHAPE', `${needs}, but received ${ref.H}x${ref.W} and ${qry.H}x${qry.W}${hint}`);
  }
  return { ref, qry, dims: { B: ref.B, C: ref.C, H: ref.H, W: ref.W }, signal, flags };
}

/**
 * Global GOCor (spec section 4). Reference and query must have the same grid (the query term
 * needs it). Output shape [B, H*W, H, W], element [b, qy*W+qx, y, x] = w(y,x)·query(qy,qx).
 * Inputs are used as given: GLU-Net L2-normalises them first (see `l2normalize`).
 */
export class GlobalGOCor {
  readonly numIter: number;
  readonly applyQueryLoss: boolean;
  readonly params?: GlobalParams;
  private readonly exec: NativeExec;
  private readonly seed: number;
  private readonly defaults = new Map<number, GlobalParams>();

  constructor(opts?: GlobalGOCorOptions) {
    const o = optObject(opts, 'options');
    knownKeys(o, 'options', ['params', 'numIter', 'applyQueryLoss', 'seed', 'device', 'threads']);
    this.numIter = optInt(o.numIter, 'options.numIter', 0, 64, 3);
    this.applyQueryLoss = bool(o.applyQueryLoss, 'options.applyQueryLoss', true);
    this.seed = optInt(o.seed, 'options.seed', 0, Number.MAX_SAFE_INTEGER, 0);
    if (o.params !== undefined) this.params = checkGlobalParams(o.params);
    const { signal: _s, ...exec } = execOptions(o, 'options');
    this.exec = exec;
  }

  private paramsFor(C: number): GlobalParams {
    if (this.params) {
      if (this.params.targetFg.length !== C) {
        throw new GocorError(
          'ERR_GOCOR_SHAPE',
          `params.targetFg has ${this.params.targetFg.length} channels but the features have ${C}`,
        );
      }
      return this.params;
    }
    let p = this.defaults.get(C);
    if (!p) {
      p = defaultGlobalParams(C, this.seed);
      this.defaults.set(C, p);
    }
    return p;
  }

  /** reference, query (B,C,H,W) -> GocorResult with shape [B, H*W, H, W]. */
  async correlate(reference: FeatureMap, query: FeatureMap, opts?: CallOptions): Promise<GocorResult> {
    const { ref, qry, dims, signal, flags } = gocorInputs(
      reference,
      query,
      opts,
      'global GOCor needs reference and query on the same grid (its query term R_θ is defined on the reference grid)',
      '; resize the features first',
    );
    const N = ref.H * ref.W;
    const job = { ...this.exec, numIter: this.numIter, applyQueryLoss: this.applyQueryLoss, ...flags };
    const n = native();
    checkMemory(
      n.estimateBytes('gocorGlobal', dims, job),
      `global GOCor on a ${ref.H}x${ref.W} grid`,
      'use a smaller grid (e.g. match({globalSize}))',
    );
    const params = this.paramsFor(ref.C);
    const r = await runNative(() => n.gocorGlobal(ref.data, qry.data, dims, params, job), signal);
    return result('global', [ref.B, N, ref.H, ref.W], r);
  }
}

const LOCAL_SAME_GRID = 'local GOCor needs reference and query of the same size';

/**
 * Local GOCor (spec section 5). Output shape [B, (2R+1)^2, H, W],
 * element [b, (dy+R)(2R+1)+(dx+R), y, x] = (1/C) w(y,x)·query(y+dy, x+dx), 0 outside.
 */
export class LocalGOCor {
  readonly numIter: number;
  readonly searchRadius: number;
  readonly params: LocalParams;
  private readonly exec: NativeExec;

  constructor(opts?: LocalGOCorOptions) {
    const o = optObject(opts, 'options');
    knownKeys(o, 'options', ['params', 'level', 'numIter', 'searchRadius', 'device', 'threads']);
    this.numIter = optInt(o.numIter, 'options.numIter', 0, 64, 3);
    this.searchRadius = optInt(o.searchRadius, 'options.searchRadius', 1, 16, 4);
    if (o.params === undefined && o.level !== undefined)
      throw new GocorError('ERR_GOCOR_INVALID_ARG', 'options.level needs options.params (what loadParams returns)');
    this.params = o.params !== undefined ? checkLocalParams(o.params, o.level) : defaultLocalParams();
    const { signal: _s, ...exec } = execOptions(o, 'options');
    this.exec = exec;
  }

  /** reference, query (B,C,H,W) -> GocorResult with shape [B, (2R+1)^2, H, W]. */
  async correlate(reference: FeatureMap, query: FeatureMap, opts?: CallOptions): Promise<GocorResult> {
    const { ref, qry, dims, signal, flags } = gocorInputs(reference, query, opts, LOCAL_SAME_GRID);
    const D = (2 * this.searchRadius + 1) ** 2;
    const job = { ...this.exec, numIter: this.numIter, searchRadius: this.searchRadius, ...flags };
    const n = native();
    checkMemory(n.estimateBytes('gocorLocal', dims, job), 'this local GOCor', 'use a smaller map or searchRadius');
    const r = await runNative(() => n.gocorLocal(ref.data, qry.data, dims, this.params, job), signal);
    return result('local', [ref.B, D, ref.H, ref.W], r);
  }
}

/**
 * L2-normalises a feature map over channels, as GLU-Net does before global GOCor:
 * x / sqrt(sum_c x_c^2 + 1e-6). Returns a new FeatureMap (NCHW).
 */
export function l2normalize(map: FeatureMap): FeatureMap {
  const d: Dims = featureMap(map, 'featureMap', true);
  const out = new Float32Array(d.data.length);
  const plane = d.H * d.W;
  for (let b = 0; b < d.B; b++) {
    const base = b * d.C * plane;
    for (let p = 0; p < plane; p++) {
      let s = 0;
      for (let c = 0; c < d.C; c++) {
        const v = d.data[base + c * plane + p] as number;
        s += v * v;
      }
      const inv = 1 / Math.sqrt(s + 1e-6);
      for (let c = 0; c < d.C; c++) out[base + c * plane + p] = (d.data[base + c * plane + p] as number) * inv;
    }
  }
  return { data: out, batch: d.B, channels: d.C, height: d.H, width: d.W };
}
