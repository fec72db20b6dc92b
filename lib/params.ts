/**
 * GOCor parameters: the official initial values, and safetensors files (or plain objects) whose
 * tensors carry the official names of spec section 11, with or without the checkpoint prefixes
 * (`corr.`, `corr.corr_module.`, `corr_module.`, `local_corr.`, `local_corr_2.` ... `local_corr_6.`).
 */
import { writeFileAtomic } from './atomic';
import { GocorError } from './errors';
import { readRegularFile } from './files';
import { native } from './native';
import { checkpointTensors, halfToFloat, isCheckpoint, toFloat32 } from './pth';
import { int } from './validate';

/** Global GOCor parameters (GLU-Net-GOCor). Shapes: targetFg/targetBg (C); regWeight1 (I,1,3,3); regWeight2 (O,I,3,3); label/weight/maskLogit (10). */
export interface GlobalParams {
  kind: 'global';
  targetFg: Float32Array;
  targetBg: Float32Array;
  logStepLength: number;
  filterReg: number;
  /** 0 for GLU-Net-GOCor; 0.1 for GLU-Net-GOCor* and PDC-Net (not stored in checkpoints). */
  steplengthReg: number;
  regInterDim: number;
  regOutputDim: number;
  regWeight1: Float32Array;
  regWeight2: Float32Array;
  label: Float32Array;
  weight: Float32Array;
  maskLogit: Float32Array;
}

/** Local GOCor parameters (PWC-Net-GOCor; GLU-Net-GOCor's shared local module). label/weight/maskLogit (10). */
export interface LocalParams {
  kind: 'local';
  scaling: number;
  logStepLength: number;
  filterReg: number;
  label: Float32Array;
  weight: Float32Array;
  maskLogit: Float32Array;
}

/**
 * What a parameter file holds: the global module, the shared local module (`local_corr.` or
 * unprefixed), and PWC-Net's per-level modules keyed by level ('2' ... '6' for `local_corr_2.` ...).
 */
export interface GocorParams {
  global?: GlobalParams;
  local?: LocalParams;
  localLevels: Record<string, LocalParams>;
}

/** One tensor of a plain-object parameter source. */
export interface TensorRecord {
  shape: number[];
  data: Float32Array;
}

/** Official initial global parameters for C channels; R_θ weights drawn N(0, 1e-3) from `seed` (gocor's own generator). */
export function defaultGlobalParams(channels: number, seed = 0): GlobalParams {
  int(channels, 'channels', 1, 1 << 16);
  int(seed, 'seed', 0, Number.MAX_SAFE_INTEGER);
  const p = native().defaultGlobalParams(channels, seed);
  return { kind: 'global', ...p };
}

/** Official initial local parameters (PWC-Net-GOCor constructor). */
export function defaultLocalParams(): LocalParams {
  const p = native().defaultLocalParams();
  return {
    kind: 'local',
    scaling: p.scaling,
    logStepLength: p.logStepLength,
    filterReg: p.filterReg,
    label: p.label,
    weight: p.weight,
    maskLogit: p.maskLogit,
  };
}

// ---- names ------------------------------------------------------------------------------------

const DIST = {
  'filter_optimizer.label_map_predictor.weight': 'label',
  'filter_optimizer.spatial_weight_predictor.weight': 'weight',
  'filter_optimizer.target_mask_predictor.0.weight': 'maskLogit',
} as const;

const GLOBAL_NAMES = [
  'filter_initializer.target_fg',
  'filter_initializer.target_bg',
  'filter_optimizer.log_step_length',
  'filter_optimizer.filter_reg',
  'filter_optimizer.reg_layer.weight1',
  'filter_optimizer.reg_layer.weight2',
  ...Object.keys(DIST),
];

const LOCAL_NAMES = [
  'filter_initializer.scaling',
  'filter_optimizer.log_step_length',
  'filter_optimizer.filter_reg',
  ...Object.keys(DIST),
];

type Group = { module: 'global' } | { module: 'local'; level: string } | { module: 'bare' };

function splitName(name: string): { group: Group; key: string } {
  const m = /^(corr\.corr_module\.|corr_module\.|corr\.)/.exec(name);
  if (m) return { group: { module: 'global' }, key: name.slice(m[0].length) };
  const l = /^local_corr(?:_([2-6]))?\./.exec(name);
  if (l) return { group: { module: 'local', level: l[1] ?? '' }, key: name.slice(l[0].length) };
  return { group: { module: 'bare' }, key: name };
}

function paramError(message: string): GocorError {
  return new GocorError('ERR_GOCOR_PARAMS', message);
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function tensor(
  t: Map<string, TensorRecord>,
  prefix: string,
  key: string,
  shape: number[] | ((s: number[]) => boolean),
  what: string,
): TensorRecord {
  const full = prefix + key;
  const r = t.get(key);
  if (!r) throw paramError(`parameter tensor ${full} is missing (${what})`);
  const ok = typeof shape === 'function' ? shape(r.shape) : sameShape(r.shape, shape);
  if (!ok) {
    const want = typeof shape === 'function' ? what : `[${shape.join(', ')}]`;
    throw paramError(`parameter tensor ${full} has shape [${r.shape.join(', ')}], expected ${want}`);
  }
  for (let i = 0; i < r.data.length; i++) {
    if (!Number.isFinite(r.data[i]))
      throw paramError(`parameter tensor ${full} holds a non-finite value (${r.data[i]}) at element ${i}`);
  }
  return r;
}

function distFns(t: Map<string, TensorRecord>, prefix: string): Pick<GlobalParams, 'label' | 'weight' | 'maskLogit'> {
  const out: Record<string, Float32Array> = {};
  for (const [key, field] of Object.entries(DIST)) {
    out[field] = Float32Array.from(tensor(t, prefix, key, [1, 10, 1, 1], 'shape [1, 10, 1, 1]').data);
  }
  return out as Pick<GlobalParams, 'label' | 'weight' | 'maskLogit'>;
}

function scalar(t: Map<string, TensorRecord>, prefix: string, key: string): number {
  return tensor(t, prefix, key, (s) => s.length <= 1 && (s[0] ?? 1) === 1, 'a single value').data[0] as number;
}

/**
 * What GOCor can run with, checked at load time so that a broken file is ERR_GOCOR_PARAMS naming the
 * tensor. Official values: filter_reg 1e-2 (it enters squared, so a negative value means a broken
 * file), log_step_length 0, R_theta 16 inner/output channels.
 */
export const PARAM_LIMITS = {
  filterReg: [0, 1e3],
  logStepLength: [-50, 50],
  regDim: [1, 256],
} as const;

function inRange(value: number, [lo, hi]: readonly [number, number], full: string): number {
  if (!(value >= lo && value <= hi))
    throw paramError(`parameter tensor ${full} is ${value}, expected a value between ${lo} and ${hi}`);
  return value;
}

/** filter_reg and log_step_length, range-checked. */
function stepParams(t: Map<string, TensorRecord>, prefix: string): { filterReg: number; logStepLength: number } {
  const reg = 'filter_optimizer.filter_reg';
  const step = 'filter_optimizer.log_step_length';
  return {
    filterReg: inRange(scalar(t, prefix, reg), PARAM_LIMITS.filterReg, prefix + reg),
    logStepLength: inRange(scalar(t, prefix, step), PARAM_LIMITS.logStepLength, prefix + step),
  };
}

const inDims = (d: number | undefined) => d !== undefined && d >= PARAM_LIMITS.regDim[0] && d <= PARAM_LIMITS.regDim[1];

function buildGlobal(t: Map<string, TensorRecord>, prefix: string): GlobalParams {
  const fg = tensor(
    t,
    prefix,
    'filter_initializer.target_fg',
    (s) => s.length === 1 && s[0] !== 0,
    'shape [C], C >= 1',
  );
  const C = fg.shape[0] as number;
  const bg = tensor(t, prefix, 'filter_initializer.target_bg', [C], `shape [${C}]`);
  const w1 = tensor(
    t,
    prefix,
    'filter_optimizer.reg_layer.weight1',
    (s) => s.length === 4 && s[1] === 1 && s[2] === 3 && s[3] === 3 && inDims(s[0]),
    `shape [I, 1, 3, 3], I from ${PARAM_LIMITS.regDim.join(' to ')}`,
  );
  const I = w1.shape[0] as number;
  const w2 = tensor(
    t,
    prefix,
    'filter_optimizer.reg_layer.weight2',
    (s) => s.length === 4 && s[1] === I && s[2] === 3 && s[3] === 3 && inDims(s[0]),
    `shape [O, ${I}, 3, 3], O from ${PARAM_LIMITS.regDim.join(' to ')}`,
  );
  return {
    kind: 'global',
    targetFg: Float32Array.from(fg.data),
    targetBg: Float32Array.from(bg.data),
    ...stepParams(t, prefix),
    steplengthReg: 0,
    regInterDim: I,
    regOutputDim: w2.shape[0] as number,
    regWeight1: Float32Array.from(w1.data),
    regWeight2: Float32Array.from(w2.data),
    ...distFns(t, prefix),
  };
}

function buildLocal(t: Map<string, TensorRecord>, prefix: string): LocalParams {
  return {
    kind: 'local',
    scaling: scalar(t, prefix, 'filter_initializer.scaling'),
    ...stepParams(t, prefix),
    ...distFns(t, prefix),
  };
}

/** Groups official tensor names into modules and builds typed parameters from them. */
export function paramsFromTensors(tensors: Record<string, TensorRecord>): GocorParams {
  const groups = new Map<string, { group: Group; prefix: string; t: Map<string, TensorRecord> }>();
  for (const [name, rec] of Object.entries(tensors)) {
    if (!rec || !Array.isArray(rec.shape) || !(rec.data instanceof Float32Array)) {
      throw paramError(`parameter tensor ${name} must be {shape: number[], data: Float32Array}`);
    }
    const n = rec.shape.reduce((a, b) => a * b, 1);
    if (n !== rec.data.length)
      throw paramError(`parameter tensor ${name} has shape [${rec.shape.join(', ')}] but ${rec.data.length} values`);
    const { group, key } = splitName(name);
    const id = group.module === 'local' ? `local:${group.level}` : group.module;
    let g = groups.get(id);
    if (!g) {
      g = { group, prefix: name.slice(0, name.length - key.length), t: new Map() };
      groups.set(id, g);
    }
    g.t.set(key, rec);
  }
  const out: GocorParams = { localLevels: {} };
  for (const g of groups.values()) {
    let isGlobal = g.group.module === 'global';
    if (g.group.module === 'bare') isGlobal = g.t.has('filter_initializer.target_fg');
    const names = isGlobal ? GLOBAL_NAMES : LOCAL_NAMES;
    for (const key of g.t.keys()) {
      if (!names.includes(key)) {
        throw paramError(
          `unknown parameter tensor ${g.prefix}${key}; ${isGlobal ? 'global' : 'local'} GOCor tensors are ${names.join(', ')}`,
        );
      }
    }
    if (isGlobal) {
      if (out.global) throw paramError('the parameters hold two global GOCor modules');
      out.global = buildGlobal(g.t, g.prefix);
    } else if (g.group.module === 'local' && g.group.level !== '') {
      out.localLevels[g.group.level] = buildLocal(g.t, g.prefix);
    } else {
      if (out.local) throw paramError('the parameters hold two shared local GOCor modules');
      out.local = buildLocal(g.t, g.prefix);
    }
  }
  if (!out.global && !out.local && Object.keys(out.localLevels).length === 0)
    throw paramError('no GOCor parameter tensors found');
  return out;
}

// ---- safetensors --------------------------------------------------------------------------------

const DTYPE_WIDTH = new Map([
  ['F32', 4],
  ['F64', 8],
  ['F16', 2],
  ['BF16', 2],
]);

function toF32(dtype: unknown, bytes: Uint8Array, name: string): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const width = typeof dtype === 'string' ? DTYPE_WIDTH.get(dtype) : undefined;
  if (!width) {
    throw paramError(
      `parameter tensor ${name} has dtype ${JSON.stringify(dtype)}; supported: ${[...DTYPE_WIDTH.keys()].join(', ')}`,
    );
  }
  if (bytes.byteLength % width !== 0)
    throw paramError(`parameter tensor ${name}: byte length ${bytes.byteLength} is not a multiple of ${width}`);
  const n = bytes.byteLength / width;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (dtype === 'F32') out[i] = dv.getFloat32(i * 4, true);
    else if (dtype === 'F64') out[i] = dv.getFloat64(i * 8, true);
    else if (dtype === 'BF16')
      out[i] = new Float32Array(new Uint32Array([dv.getUint16(i * 2, true) << 16]).buffer)[0] as number;
    else out[i] = halfToFloat(dv.getUint16(i * 2, true));
  }
  return out;
}

/** Parses a safetensors buffer into named float32 tensors. */
export function parseSafetensors(buf: Uint8Array): Record<string, TensorRecord> {
  if (buf.byteLength < 8) throw paramError('not a safetensors file: shorter than its 8-byte header length');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLen = Number(dv.getBigUint64(0, true));
  if (headerLen <= 1 || 8 + headerLen > buf.byteLength)
    throw paramError(`not a safetensors file: header length ${headerLen} does not fit in ${buf.byteLength} bytes`);
  let header: Record<string, { dtype: unknown; shape: number[]; data_offsets: [number, number] }>;
  const text = Buffer.from(buf.buffer, buf.byteOffset + 8, headerLen).toString('utf8');
  try {
    header = JSON.parse(text);
  } catch (err) {
    throw new GocorError(
      'ERR_GOCOR_PARAMS',
      `not a safetensors file: its header is not JSON (${(err as Error).message})`,
      { cause: err },
    );
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    throw paramError('not a safetensors file: header is not an object');
  const seen = new Set<string>();
  for (const key of topLevelKeys(text)) {
    if (seen.has(key)) throw paramError(`not a safetensors file: tensor ${key} is named twice in the header`);
    if (key === '__proto__') throw paramError('not a safetensors file: __proto__ is not a tensor name');
    seen.add(key);
  }
  const base = 8 + headerLen;
  // A null-prototype record: no tensor name can reach Object.prototype.
  const out: Record<string, TensorRecord> = Object.create(null);
  const spans: { b: number; e: number; name: string }[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const offs = info?.data_offsets;
    if (!info || !Array.isArray(info.shape) || !Array.isArray(offs) || offs.length !== 2)
      throw paramError(`parameter tensor ${name}: malformed safetensors entry`);
    if (!info.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw paramError(`parameter tensor ${name}: shape ${JSON.stringify(info.shape)} is not a list of sizes`);
    const [b, e] = offs;
    if (!Number.isSafeInteger(b) || !Number.isSafeInteger(e) || b < 0 || e < b || base + e > buf.byteLength) {
      throw paramError(`parameter tensor ${name}: data offsets [${b}, ${e}] lie outside the file`);
    }
    spans.push({ b, e, name });
    out[name] = { shape: info.shape, data: toF32(info.dtype, buf.subarray(base + b, base + e), name) };
  }
  // Each byte belongs to one tensor at most (empty tensors take none).
  spans.sort((x, y) => x.b - y.b);
  let end = 0;
  let endName = '';
  for (const sp of spans) {
    if (sp.e === sp.b) continue;
    if (sp.b < end) throw paramError(`parameter tensors ${endName} and ${sp.name}: data offsets overlap`);
    end = sp.e;
    endName = sp.name;
  }
  return out;
}

/** The keys of the outermost object of a JSON text that JSON.parse accepted, duplicates included, in order. */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(text.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return keys;
}

/** Serialises named float32 tensors as safetensors. */
export function encodeSafetensors(tensors: Record<string, TensorRecord>): Buffer {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', producer: 'gocor' } };
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const t = tensors[name] as TensorRecord;
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
  const hbytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + hbytes.length + offset);
  out.writeBigUInt64LE(BigInt(hbytes.length), 0);
  hbytes.copy(out, 8);
  let pos = 8 + hbytes.length;
  for (const name of names) {
    const t = tensors[name] as TensorRecord;
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, pos);
    pos += t.data.byteLength;
  }
  return out;
}

/** The official tensors of parameters, with checkpoint prefixes (`corr.corr_module.`, `local_corr.`, `local_corr_N.`). */
export function paramsToTensors(params: GocorParams | GlobalParams | LocalParams): Record<string, TensorRecord> {
  const p: GocorParams =
    'kind' in params
      ? params.kind === 'global'
        ? { global: params, localLevels: {} }
        : { local: params, localLevels: {} }
      : params;
  const out: Record<string, TensorRecord> = {};
  const dist = (prefix: string, d: Pick<LocalParams, 'label' | 'weight' | 'maskLogit'>) => {
    out[`${prefix}filter_optimizer.label_map_predictor.weight`] = { shape: [1, 10, 1, 1], data: d.label };
    out[`${prefix}filter_optimizer.spatial_weight_predictor.weight`] = { shape: [1, 10, 1, 1], data: d.weight };
    out[`${prefix}filter_optimizer.target_mask_predictor.0.weight`] = { shape: [1, 10, 1, 1], data: d.maskLogit };
  };
  const local = (prefix: string, l: LocalParams) => {
    out[`${prefix}filter_initializer.scaling`] = { shape: [1], data: Float32Array.of(l.scaling) };
    out[`${prefix}filter_optimizer.log_step_length`] = { shape: [1], data: Float32Array.of(l.logStepLength) };
    out[`${prefix}filter_optimizer.filter_reg`] = { shape: [1], data: Float32Array.of(l.filterReg) };
    dist(prefix, l);
  };
  if (p.global) {
    const g = p.global;
    const pre = 'corr.corr_module.';
    out[`${pre}filter_initializer.target_fg`] = { shape: [g.targetFg.length], data: g.targetFg };
    out[`${pre}filter_initializer.target_bg`] = { shape: [g.targetBg.length], data: g.targetBg };
    out[`${pre}filter_optimizer.log_step_length`] = { shape: [1], data: Float32Array.of(g.logStepLength) };
    out[`${pre}filter_optimizer.filter_reg`] = { shape: [1], data: Float32Array.of(g.filterReg) };
    out[`${pre}filter_optimizer.reg_layer.weight1`] = { shape: [g.regInterDim, 1, 3, 3], data: g.regWeight1 };
    out[`${pre}filter_optimizer.reg_layer.weight2`] = {
      shape: [g.regOutputDim, g.regInterDim, 3, 3],
      data: g.regWeight2,
    };
    dist(pre, g);
  }
  if (p.local) local('local_corr.', p.local);
  for (const [level, l] of Object.entries(p.localLevels)) local(`local_corr_${level}.`, l);
  return out;
}

/** Official GOCor tensor names in a checkpoint (spec 11), after an optional DataParallel `module.`. */
const CHECKPOINT_NAME = /^(?:module\.)?((?:corr\.corr_module\.|local_corr(?:_[2-6])?\.)(.+))$/;

function isCheckpointGocorName(name: string): boolean {
  const m = CHECKPOINT_NAME.exec(name);
  if (!m) return false;
  return (m[1]?.startsWith('corr.') ? GLOBAL_NAMES : LOCAL_NAMES).includes(m[2] as string);
}

/** GOCor's tensors of a PyTorch checkpoint by their official names; every other tensor is ignored (and not read). */
async function paramsFromCheckpoint(buf: Uint8Array): Promise<GocorParams> {
  const found = await checkpointTensors(buf, isCheckpointGocorName);
  const tensors: Record<string, TensorRecord> = Object.create(null);
  for (const [name, t] of Object.entries(found)) {
    tensors[(CHECKPOINT_NAME.exec(name) as RegExpExecArray)[1] as string] = { shape: t.shape, data: toFloat32(t) };
  }
  if (Object.keys(tensors).length === 0)
    throw paramError(
      'the checkpoint holds no GOCor tensors (corr.corr_module.*, local_corr.*, local_corr_2..6.*; spec section 11)',
    );
  return paramsFromTensors(tensors);
}

function paramsFromBytes(buf: Uint8Array): Promise<GocorParams> | GocorParams {
  return isCheckpoint(buf) ? paramsFromCheckpoint(buf) : paramsFromTensors(parseSafetensors(buf));
}

/**
 * Reads GOCor parameters from a file path or its bytes — safetensors, or a PyTorch checkpoint
 * (`.pth`/`.pth.tar`, zip or legacy format; its GOCor tensors by their official names, everything
 * else ignored) — or from a plain object of `{name: {shape, data}}`. Wrong names, shapes or
 * non-finite values reject with ERR_GOCOR_PARAMS naming the tensor.
 */
export async function loadParams(
  source: string | Buffer | Uint8Array | Record<string, TensorRecord>,
): Promise<GocorParams> {
  if (typeof source === 'string') return paramsFromBytes(await readRegularFile(source, 'parameter file'));
  if (source instanceof Uint8Array) return paramsFromBytes(source);
  if (typeof source === 'object' && source !== null) return paramsFromTensors(source);
  throw new GocorError(
    'ERR_GOCOR_INVALID_ARG',
    `Expected path, Buffer or tensor object for source but received ${typeof source}`,
  );
}

/** Serialises parameters as safetensors with the official names; writes atomically to `path` when given. */
export async function saveParams(params: GocorParams | GlobalParams | LocalParams, path?: string): Promise<Buffer> {
  const buf = encodeSafetensors(paramsToTensors(params));
  if (path !== undefined) await writeFileAtomic(path, buf);
  return buf;
}
