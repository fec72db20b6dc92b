/**
 * The official GOCor networks — PWC-Net, PWC-Net-GOCor, GLU-Net, GLU-Net-GOCor — from their
 * checkpoints' tensors (the official state_dict names), run natively off the event loop.
 */
import { captureStack, fromNative, GocorError } from './errors';
import { checkMemory, EXEC_KEYS, execOptions } from './exec';
import { checkImage, isImageSource } from './features';
import { readRegularFile } from './files';
import { loadImage } from './image';
import type { Flow } from './match';
import { type NativeExec, type NativeNetwork, native } from './native';
import { parseSafetensors, type TensorRecord } from './params';
import { checkpointTensors, isCheckpoint, toFloat32 } from './pth';
import { runNative } from './queue';
import type { ExecOptions, Image } from './types';
import { f32, int, invalid, knownKeys, object, optInt, optObject } from './validate';

export const NETWORK_MODELS = ['PWCNet', 'PWCNet_GOCor', 'GLUNet', 'GLUNet_GOCor'] as const;
export type NetworkModel = (typeof NETWORK_MODELS)[number];

/** Where the weights come from: a PyTorch checkpoint or safetensors file (path or bytes), or a record of tensors by official name. */
export type NetworkSource = string | Buffer | Uint8Array | Record<string, TensorRecord>;

export interface LoadNetworkOptions extends Omit<ExecOptions, 'signal'> {
  model: NetworkModel;
  /** K_global of GLU-Net-GOCor's global module, 0..64, default 3 (the authors' evaluations: 3). */
  numIterGlobal?: number;
  /** K_local of the local GOCor modules, 0..64, default: numIterGlobal (the authors' evaluations: 7 for PWC-Net-GOCor). */
  numIterLocal?: number;
}

/** An NCHW float32 tensor. */
export interface Tensor {
  data: Float32Array;
  shape: number[];
}

/** One entry of the official `flow_estimates` list: shape [B, 2, h, w]. */
export interface FlowEstimate {
  data: Float32Array;
  shape: [number, number, number, number];
}

export interface PwcInputs {
  /** Target / reference image (B, 3, H, W), BGR in [0, 1]; H, W multiples of 64. */
  reference: Tensor;
  /** Source / query image, same shape. */
  query: Tensor;
}

export interface GluInputs {
  /** (B, 3, H, W), ImageNet-normalised RGB; H, W multiples of 8. */
  target: Tensor;
  source: Tensor;
  /** (B, 3, 256, 256) resized copies. */
  target256: Tensor;
  source256: Tensor;
}

export interface PwcOutput {
  /** flow6 … flow2 (grids 1/64 … 1/4), in input pixels / 20. */
  flowEstimates: FlowEstimate[];
  device: 'cpu' | 'cuda';
}

export interface GluOutput {
  /** flow4 (16×16, 256-image pixels), flow3 (original-image pixels). */
  flowEstimates256: FlowEstimate[];
  /** flow2 (1/8), flow1 (1/4), original-image pixels. */
  flowEstimates: FlowEstimate[];
  device: 'cpu' | 'cuda';
}

/** The state_dict names and shapes of a model, in the official order. */
export function networkTensors(model: NetworkModel): { name: string; shape: number[] }[] {
  return native()
    .networkTensors(modelOf(model, 'model'))
    .map(([name, shape]) => ({ name, shape }));
}

function modelOf(value: unknown, name: string): NetworkModel {
  if (!NETWORK_MODELS.includes(value as NetworkModel))
    throw invalid(`one of ${NETWORK_MODELS.join(', ')}`, name, value);
  return value as NetworkModel;
}

function paramError(message: string): GocorError {
  return new GocorError('ERR_GOCOR_PARAMS', message);
}

const isCounter = (name: string) => name.endsWith('.num_batches_tracked');

/** The tensors of a source, by name: the one place that knows source formats. */
export async function sourceTensors(source: NetworkSource): Promise<Record<string, TensorRecord>> {
  if (typeof source === 'string') return fileTensors(await readRegularFile(source, 'network weights'));
  if (source instanceof Uint8Array) return fileTensors(source);
  if (typeof source === 'object' && source !== null) return source;
  throw invalid('safetensors path, Buffer or tensor record', 'source', source);
}

/** A PyTorch checkpoint (`.pth` / `.pth.tar`, with or without the state_dict wrapper) or safetensors. */
async function fileTensors(buf: Uint8Array): Promise<Record<string, TensorRecord>> {
  if (!isCheckpoint(buf)) return parseSafetensors(buf);
  const out: Record<string, TensorRecord> = Object.create(null);
  for (const [name, t] of Object.entries(await checkpointTensors(buf)))
    out[name] = { shape: t.shape, data: toFloat32(t) };
  return out;
}

/** Strict, like the official loader: every expected tensor present with its shape, nothing else. */
function checkTensors(model: NetworkModel, t: Record<string, TensorRecord>): string[] {
  const expected = networkTensors(model);
  const names = new Set(expected.map((e) => e.name));
  for (const name of Object.keys(t)) {
    if (!names.has(name)) throw paramError(`unexpected network tensor ${name} (not part of ${model})`);
  }
  const use: string[] = [];
  for (const { name, shape } of expected) {
    const r = t[name];
    if (isCounter(name)) continue; // an int64 counter, unused in inference
    if (!r) throw paramError(`network tensor ${name} is missing (expected shape [${shape.join(', ')}])`);
    if (!Array.isArray(r.shape) || !(r.data instanceof Float32Array))
      throw paramError(`network tensor ${name} is not {shape, data: Float32Array}`);
    const n = shape.reduce((a, b) => a * b, 1);
    if (r.shape.length !== shape.length || r.shape.some((d, i) => d !== shape[i]) || r.data.length !== n) {
      throw paramError(
        `network tensor ${name} has shape [${r.shape.join(', ')}] (${r.data.length} values), expected [${shape.join(', ')}]`,
      );
    }
    for (let i = 0; i < r.data.length; i++) {
      if (!Number.isFinite(r.data[i])) throw paramError(`network tensor ${name} holds ${r.data[i]} at element ${i}`);
    }
    use.push(name);
  }
  return use;
}

function tensor4(value: unknown, name: string): { data: Float32Array; B: number; C: number; H: number; W: number } {
  const t = object(value, name);
  const shape = t.shape;
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isSafeInteger(d) && d > 0))
    throw new GocorError('ERR_GOCOR_SHAPE', `Expected ${name}.shape to be [B, C, H, W] of positive integers`);
  const [B, C, H, W] = shape as [number, number, number, number];
  return { data: f32(t.data, `${name}.data`, B * C * H * W), B, C, H, W };
}

function shapeError(message: string): GocorError {
  return new GocorError('ERR_GOCOR_SHAPE', message);
}

function estimates(list: { h: number; w: number; data: Float32Array }[], B: number): FlowEstimate[] {
  return list.map((e) => ({ data: e.data, shape: [B, 2, e.h, e.w] }));
}

/** A loaded network. */
export class Network {
  readonly model: NetworkModel;
  /** Where its layers run, resolved once by loadNetwork from its `device` option. */
  readonly device: 'cpu' | 'cuda';
  readonly #handle: NativeNetwork;
  readonly #exec: NativeExec;

  /** @internal use loadNetwork */
  constructor(model: NetworkModel, handle: NativeNetwork, exec: NativeExec & { device: 'cpu' | 'cuda' }) {
    this.model = model;
    this.device = exec.device;
    this.#handle = handle;
    this.#exec = exec;
  }

  get isGlu(): boolean {
    return this.model === 'GLUNet' || this.model === 'GLUNet_GOCor';
  }

  /**
   * Bytes the loaded network keeps between calls: its parameters, one layout each (about the
   * float32 bytes of the checkpoint's tensors; batch norm folded into two vectors per layer).
   */
  get retainedBytes(): number {
    return native().networkRetainedBytes(this.#handle);
  }

  /**
   * Exactly the official `forward` on pre-processed tensors. PWC networks: `{reference, query}` ->
   * `{flowEstimates}`; GLU networks: `{target, source, target256, source256}` ->
   * `{flowEstimates256, flowEstimates}`.
   */
  forward(inputs: PwcInputs, opts?: { signal?: AbortSignal }): Promise<PwcOutput>;
  forward(inputs: GluInputs, opts?: { signal?: AbortSignal }): Promise<GluOutput>;
  async forward(inputs: PwcInputs | GluInputs, opts?: { signal?: AbortSignal }): Promise<PwcOutput | GluOutput> {
    const o = optObject(opts, 'options');
    knownKeys(o, 'options', ['signal']);
    const { signal } = execOptions(o, 'options');
    const x = object(inputs, 'inputs');
    const glu = this.isGlu;
    const names = glu ? ['target', 'source', 'target256', 'source256'] : ['reference', 'query'];
    knownKeys(x, 'inputs', names);
    const t = names.map((n) => tensor4(x[n], `inputs.${n}`));
    const [a, b] = t as [ReturnType<typeof tensor4>, ReturnType<typeof tensor4>];
    for (const [i, v] of t.entries()) {
      if (v.C !== 3) throw shapeError(`Expected 3 channels in inputs.${names[i]} but received ${v.C}`);
      if (v.B !== a.B) throw shapeError(`inputs.${names[i]} has batch ${v.B}, inputs.${names[0]} has ${a.B}`);
    }
    if (b.H !== a.H || b.W !== a.W)
      throw shapeError(`inputs.${names[1]} is ${b.H}x${b.W}, inputs.${names[0]} is ${a.H}x${a.W}: they must match`);
    const mult = glu ? 8 : 64;
    if (a.H % mult !== 0 || a.W % mult !== 0 || a.H < (glu ? 32 : 64) || a.W < (glu ? 32 : 64)) {
      throw shapeError(
        `${this.model} needs image sizes that are multiples of ${mult} (at least ${glu ? 32 : 64}); received ${a.H}x${a.W} (match() pre-processes any size)`,
      );
    }
    if (glu) {
      for (const i of [2, 3]) {
        const v = t[i] as ReturnType<typeof tensor4>;
        if (v.H !== 256 || v.W !== 256)
          throw shapeError(`Expected inputs.${names[i]} to be 256x256 but received ${v.H}x${v.W}`);
      }
    }
    const B = a.B;
    const inBytes = t.reduce((s, v) => s + v.data.byteLength, 0);
    checkMemory(
      2 * inBytes + native().networkWorkBytes(this.#handle, a.H, a.W),
      `${this.model} forward at ${a.H}x${a.W}`,
      'use smaller images',
    );
    const dims = glu ? { B, H: a.H, W: a.W, H256: 256, W256: 256 } : { B, H: a.H, W: a.W };
    const handle = this.#handle;
    const exec = this.#exec;
    const r = await runNative(
      () =>
        native().networkForward(
          handle,
          t.map((v) => v.data),
          dims,
          exec,
        ),
      signal,
    );
    if (glu) {
      return {
        flowEstimates256: estimates(r.estimates256 ?? [], B),
        flowEstimates: estimates(r.estimates, B),
        device: r.device,
      };
    }
    return { flowEstimates: estimates(r.estimates, B), device: r.device };
  }

  /**
   * Images in, flow out in gocor's convention: on a's grid (or `outputShape`), a(x) ~ b(x + flow(x)).
   * The official `estimate_flow` with source = b and target = a, with its pre-processing (8-bit
   * images; PWC: sizes rounded up to multiples of 64, BGR / 255; GLU: the full-resolution and
   * 256×256 streams, ImageNet normalisation; a smaller image zero-padded at the top and left) and
   * post-processing (bilinear upsampling of the final flow, ratio scaling). Images: Image objects
   * (RGB or grey, values in [0, 1]), paths or encoded Buffers.
   */
  async match(
    a: Image | string | Buffer | Uint8Array,
    b: Image | string | Buffer | Uint8Array,
    opts?: NetworkMatchOptions,
  ): Promise<Flow & { device: 'cpu' | 'cuda' }> {
    const o = optObject(opts, 'options');
    knownKeys(o, 'options', ['outputShape', 'signal']);
    const { signal } = execOptions(o, 'options');
    const [ia, ib] = await Promise.all([isImageSource(a) ? loadImage(a) : a, isImageSource(b) ? loadImage(b) : b]);
    const A = checkImage(ia, 'a');
    const Bi = checkImage(ib, 'b');
    if (A.C !== Bi.C) throw shapeError(`a has ${A.C} channels, b has ${Bi.C}: they must match`);
    let H = A.H;
    let W = A.W;
    if (o.outputShape !== undefined) {
      const s = object(o.outputShape, 'options.outputShape');
      knownKeys(s, 'options.outputShape', ['width', 'height']);
      W = int(s.width, 'options.outputShape.width', 1, 16384);
      H = int(s.height, 'options.outputShape.height', 1, 16384);
    }
    // The network runs at the larger image's size rounded up to 64 (PWC) or at least 256 (GLU).
    const Hn = Math.max(A.H, Bi.H, this.isGlu ? 256 : 64) + 64;
    const Wn = Math.max(A.W, Bi.W, this.isGlu ? 256 : 64) + 64;
    checkMemory(
      4 * (A.data.length + Bi.data.length + 12 * Hn * Wn + 4 * H * W) + native().networkWorkBytes(this.#handle, Hn, Wn),
      `${this.model} on ${A.W}x${A.H} and ${Bi.W}x${Bi.H} images`,
      'use smaller images',
    );
    const handle = this.#handle;
    const exec = this.#exec;
    const r = await runNative(
      () =>
        native().networkMatch(
          handle,
          A.data,
          { C: A.C, H: A.H, W: A.W },
          Bi.data,
          { C: Bi.C, H: Bi.H, W: Bi.W },
          { H, W },
          exec,
        ),
      signal,
    );
    return { data: r.data, width: r.width, height: r.height, device: r.device };
  }
}

/** Options of Network.match. */
export interface NetworkMatchOptions {
  /** Grid of the returned flow (its vectors in pixels of that grid); default: a's size. */
  outputShape?: { width: number; height: number };
  signal?: AbortSignal;
}

/**
 * Loads one of the official networks from its weights (official state_dict names). Strict like the
 * official loader: a missing, unexpected or mis-shaped tensor rejects with ERR_GOCOR_PARAMS naming it;
 * `num_batches_tracked` counters may be absent (they are unused in inference). `device` is resolved
 * once, at load (`network.device` says the result): `'cuda'` without a usable GPU rejects with
 * ERR_GOCOR_CUDA_UNAVAILABLE, `'auto'` falls back to the CPU; each layer runs on its CUDA twin only
 * once that twin has passed GPU parity (`cuda_parity --list` shows where each goes).
 */
export async function loadNetwork(source: NetworkSource, opts: LoadNetworkOptions): Promise<Network> {
  const o = object(opts, 'options');
  knownKeys(o, 'options', ['model', 'numIterGlobal', 'numIterLocal', ...EXEC_KEYS.filter((k) => k !== 'signal')]);
  const model = modelOf(o.model, 'options.model');
  const numIterGlobal = optInt(o.numIterGlobal, 'options.numIterGlobal', 0, 64, 3);
  const numIterLocal = optInt(o.numIterLocal, 'options.numIterLocal', 0, 64, numIterGlobal);
  const { device, threads } = execOptions(o, 'options');
  // The device is resolved once, here, before the weights are read: 'cuda' without a usable GPU
  // rejects with ERR_GOCOR_CUDA_UNAVAILABLE, 'auto' falls back to the CPU.
  let resolved: 'cpu' | 'cuda';
  try {
    resolved = native().networkDevice({ device, threads });
  } catch (err) {
    throw fromNative(err, captureStack());
  }
  const tensors = await sourceTensors(source);
  const use = checkTensors(model, tensors);
  const handle = native().networkCreate(
    model,
    use,
    use.map((n) => (tensors[n] as TensorRecord).shape),
    use.map((n) => (tensors[n] as TensorRecord).data),
    { numIterGlobal, numIterLocal },
  );
  return new Network(model, handle, { device: resolved, threads });
}
