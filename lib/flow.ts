/**
 * Flow tools: Middlebury .flo I/O, the Middlebury colour coding, warping, resizing and metrics.
 * A Flow is `{ data: [2, height, width] float32 (u plane, then v plane), width, height, confidence? }`
 * on the grid of image a, pointing into b: a(x) corresponds to b(x + flow(x)); x right, y down.
 *
 * Sync or async, one rule for the whole API: a function that reads or writes a file, encodes an
 * image or runs native code returns a Promise and does that work off the event loop (readFlo,
 * writeFlo, flowToColor, warpImage, resizeFlow); a function that only does one pass of arithmetic
 * over arrays already in memory returns its result directly (flowMetrics, encodeFlo, l2normalize).
 */
import sharp from 'sharp';
import { writeFileAtomic } from './atomic';
import { GocorError } from './errors';
import { checkMemory, EXEC_KEYS, execOptions } from './exec';
import { checkImage } from './features';
import { readRegularFile } from './files';
import type { Flow } from './match';
import { native } from './native';
import { runNative } from './queue';
import type { ExecOptions, Image } from './types';
import { f32, int, invalid, knownKeys, num, object, optObject } from './validate';

const FLO_MAGIC = 202021.25; // the float whose bytes spell "PIEH"

/** Checks a Flow and returns it (data of 2*H*W values; non-finite values allowed for unknown flow). */
export function checkFlow(value: unknown, name: string): Flow {
  const o = object(value, name) as Partial<Flow>;
  const width = int(o.width, `${name}.width`, 1, 1 << 16);
  const height = int(o.height, `${name}.height`, 1, 1 << 16);
  const data = f32(o.data, `${name}.data`, 2 * width * height, false);
  if (o.confidence !== undefined) f32(o.confidence, `${name}.confidence`, width * height, false);
  return { data, width, height, confidence: o.confidence };
}

function floSize(head: Buffer): number | undefined {
  const ok =
    head.length === 12 && head.readFloatLE(0) === FLO_MAGIC && head.readInt32LE(4) > 0 && head.readInt32LE(8) > 0;
  return ok ? 12 + 8 * head.readInt32LE(4) * head.readInt32LE(8) : undefined;
}

/** Reads a Middlebury .flo file (path or bytes). Unknown vectors (|u| or |v| > 1e9) are kept as stored. */
export async function readFlo(source: string | Uint8Array): Promise<Flow> {
  let buf: Buffer;
  const what = typeof source === 'string' ? source : 'buffer';
  if (typeof source === 'string') {
    if (source.length === 0) throw invalid('non-empty path', 'source', source);
    // A regular file only, and as long as its header says (PIEH, width, height, 8 bytes a pixel).
    buf = await readRegularFile(source, '.flo file', floSize, 12);
  } else if (source instanceof Uint8Array) {
    buf = Buffer.from(source.buffer, source.byteOffset, source.byteLength);
  } else {
    throw invalid('path, Buffer or Uint8Array', 'source', source);
  }
  if (buf.length < 12 || buf.readFloatLE(0) !== FLO_MAGIC) {
    throw new GocorError('ERR_GOCOR_IO', `${what} is not a .flo file (missing the PIEH magic)`);
  }
  const width = buf.readInt32LE(4);
  const height = buf.readInt32LE(8);
  if (width < 1 || height < 1 || width > 1 << 16 || height > 1 << 16) {
    throw new GocorError('ERR_GOCOR_IO', `${what}: implausible .flo size ${width}x${height}`);
  }
  const n = width * height;
  if (buf.length !== 12 + 8 * n) {
    throw new GocorError(
      'ERR_GOCOR_IO',
      `${what}: expected ${12 + 8 * n} bytes for ${width}x${height} but found ${buf.length}`,
    );
  }
  const data = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    data[i] = buf.readFloatLE(12 + 8 * i);
    data[n + i] = buf.readFloatLE(16 + 8 * i);
  }
  return { data, width, height };
}

/** Encodes a flow as Middlebury .flo bytes (interleaved u, v per pixel, little-endian float32). */
export function encodeFlo(flow: Flow): Buffer {
  const f = checkFlow(flow, 'flow');
  const n = f.width * f.height;
  const buf = Buffer.alloc(12 + 8 * n);
  buf.writeFloatLE(FLO_MAGIC, 0);
  buf.writeInt32LE(f.width, 4);
  buf.writeInt32LE(f.height, 8);
  for (let i = 0; i < n; i++) {
    buf.writeFloatLE(f.data[i] as number, 12 + 8 * i);
    buf.writeFloatLE(f.data[n + i] as number, 16 + 8 * i);
  }
  return buf;
}

/** Writes a Middlebury .flo file atomically (temporary file in the same folder, then rename). */
export async function writeFlo(path: string, flow: Flow): Promise<void> {
  if (typeof path !== 'string' || path.length === 0) throw invalid('non-empty path', 'path', path);
  await writeFileAtomic(path, encodeFlo(flow));
}

// The Middlebury colour wheel: 55 hues in six segments (red-yellow 15, yellow-green 6, green-cyan 4,
// cyan-blue 11, blue-magenta 13, magenta-red 6), each a linear ramp between two primaries.
function colourWheel(): Float32Array {
  const segments: [number, [number, number, number], [number, number, number]][] = [
    [15, [255, 0, 0], [255, 255, 0]],
    [6, [255, 255, 0], [0, 255, 0]],
    [4, [0, 255, 0], [0, 255, 255]],
    [11, [0, 255, 255], [0, 0, 255]],
    [13, [0, 0, 255], [255, 0, 255]],
    [6, [255, 0, 255], [255, 0, 0]],
  ];
  const wheel: number[] = [];
  for (const [n, from, to] of segments) {
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 3; c++)
        wheel.push(((from[c] as number) + ((to[c] as number) - (from[c] as number)) * (i / n)) / 255);
    }
  }
  return Float32Array.from(wheel);
}

export interface FlowToColorOptions {
  /** Flow magnitude mapped to full saturation; default: the largest finite magnitude in the flow. */
  maxFlow?: number;
}

/**
 * Colour-codes a flow with the standard Middlebury colour wheel (hue = direction, saturation =
 * magnitude / maxFlow; beyond maxFlow the colour is darkened) and encodes it as PNG. Unknown
 * vectors (non-finite or > 1e9) are black.
 */
export async function flowToColor(flow: Flow, opts?: FlowToColorOptions): Promise<Buffer> {
  const f = checkFlow(flow, 'flow');
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', ['maxFlow']);
  const n = f.width * f.height;
  const known = (u: number, v: number) =>
    Number.isFinite(u) && Number.isFinite(v) && Math.abs(u) <= 1e9 && Math.abs(v) <= 1e9;
  let maxFlow: number;
  if (o.maxFlow !== undefined) maxFlow = num(o.maxFlow, 'options.maxFlow', 1e-9);
  else {
    maxFlow = 0;
    for (let i = 0; i < n; i++) {
      const u = f.data[i] as number;
      const v = f.data[n + i] as number;
      if (known(u, v)) maxFlow = Math.max(maxFlow, Math.hypot(u, v));
    }
    if (maxFlow === 0) maxFlow = 1;
  }
  const wheel = colourWheel();
  const ncols = wheel.length / 3;
  const rgb = Buffer.alloc(3 * n);
  for (let i = 0; i < n; i++) {
    const u = f.data[i] as number;
    const v = f.data[n + i] as number;
    if (!known(u, v)) continue;
    const fu = u / maxFlow;
    const fv = v / maxFlow;
    const rad = Math.hypot(fu, fv);
    const a = Math.atan2(-fv, -fu) / Math.PI;
    const fk = ((a + 1) / 2) * (ncols - 1);
    const k0 = Math.floor(fk);
    const k1 = (k0 + 1) % ncols;
    const t = fk - k0;
    for (let c = 0; c < 3; c++) {
      let col = (1 - t) * (wheel[3 * k0 + c] as number) + t * (wheel[3 * k1 + c] as number);
      col = rad <= 1 ? 1 - rad * (1 - col) : col * 0.75;
      rgb[3 * i + c] = Math.round(255 * col);
    }
  }
  return sharp(rgb, { raw: { width: f.width, height: f.height, channels: 3 } })
    .png()
    .toBuffer();
}

/**
 * Brings image b onto a's grid along the flow: out(x) = b(x + flow(x)), bilinear, off the event loop.
 * Points that fall outside b are 0 and have `valid` 0 (`[height, width]`, else 1). CPU code:
 * `device: 'cuda'` needs a usable GPU all the same (as every compute function), and `device` says 'cpu'.
 */
export async function warpImage(
  b: Image,
  flow: Flow,
  opts?: ExecOptions,
): Promise<Image & { valid: Float32Array; device: 'cpu' | 'cuda' }> {
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', EXEC_KEYS);
  const { signal, ...exec } = execOptions(o, 'options');
  const img = checkImage(b, 'b');
  const f = checkFlow(flow, 'flow');
  f32(f.data, 'flow.data', 2 * f.width * f.height, true, Number.POSITIVE_INFINITY);
  const dims = { b: { C: img.C, H: img.H, W: img.W }, flow: { C: 2, H: f.height, W: f.width } };
  checkMemory(
    native().estimateBytes('warpImage', dims, exec),
    `warping onto a ${f.width}x${f.height} grid`,
    'use a smaller flow',
  );
  const r = await runNative(() => native().warpImage(img.data, dims.b, f.data, dims.flow, exec), signal);
  return { data: r.data, channels: img.C, height: f.height, width: f.width, valid: r.mask, device: r.device };
}

/**
 * Resizes a flow to `{width, height}` (bilinear) and rescales its vectors to the new pixel size.
 * CPU code; the device contract as for warpImage.
 */
export async function resizeFlow(
  flow: Flow,
  shape: { width: number; height: number },
  opts?: ExecOptions,
): Promise<Flow & { device: 'cpu' | 'cuda' }> {
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', EXEC_KEYS);
  const { signal, ...exec } = execOptions(o, 'options');
  const f = checkFlow(flow, 'flow');
  f32(f.data, 'flow.data', 2 * f.width * f.height, true, Number.POSITIVE_INFINITY);
  const s = object(shape, 'shape');
  const width = int(s.width, 'shape.width', 1, 16384);
  const height = int(s.height, 'shape.height', 1, 16384);
  const dims = { from: { C: 2, H: f.height, W: f.width }, to: { C: 2, H: height, W: width } };
  checkMemory(native().estimateBytes('resizeFlow', dims, exec), `a ${width}x${height} flow`, 'use a smaller shape');
  const r = await runNative(() => native().resizeFlow(f.data, dims.from, dims.to, exec), signal);
  return { data: r.data, width, height, device: r.device };
}

export interface FlowMetrics {
  /** Average end-point error over the counted pixels (pixels). */
  aepe: number;
  /** Fraction of counted pixels with end-point error <= 1, 3, 5 pixels. */
  pck1: number;
  pck3: number;
  pck5: number;
  /** Pixels counted: valid, with a known ground truth. */
  count: number;
}

/**
 * Compares a flow with the ground truth on the same grid. `valid` (optional, `[height, width]`,
 * non-zero = counted) restricts the pixels; ground-truth vectors that are non-finite or > 1e9 are skipped.
 */
export function flowMetrics(flow: Flow, gt: Flow, valid?: ArrayLike<number | boolean>): FlowMetrics {
  const f = checkFlow(flow, 'flow');
  const g = checkFlow(gt, 'gt');
  if (f.width !== g.width || f.height !== g.height) {
    throw new GocorError('ERR_GOCOR_SHAPE', `flow is ${f.width}x${f.height} but gt is ${g.width}x${g.height}`);
  }
  const n = f.width * f.height;
  if (valid !== undefined && (typeof valid !== 'object' || valid === null || valid.length !== n)) {
    throw invalid(`array-like of ${n} values`, 'valid', valid);
  }
  let sum = 0;
  let p1 = 0;
  let p3 = 0;
  let p5 = 0;
  let count = 0;
  for (let i = 0; i < n; i++) {
    if (valid !== undefined && !valid[i]) continue;
    const gu = g.data[i] as number;
    const gv = g.data[n + i] as number;
    if (!Number.isFinite(gu) || !Number.isFinite(gv) || Math.abs(gu) > 1e9 || Math.abs(gv) > 1e9) continue;
    const e = Math.hypot((f.data[i] as number) - gu, (f.data[n + i] as number) - gv);
    sum += e;
    if (e <= 1) p1++;
    if (e <= 3) p3++;
    if (e <= 5) p5++;
    count++;
  }
  if (count === 0) return { aepe: Number.NaN, pck1: Number.NaN, pck3: Number.NaN, pck5: Number.NaN, count };
  return { aepe: sum / count, pck1: p1 / count, pck3: p3 / count, pck5: p5 / count, count };
}
