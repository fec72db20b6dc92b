/**
 * NumPy .npy files (format versions 1 and 2): float32 / float64, little-endian, C order.
 * `loadNpy` turns a feature file `(C, H, W)` or `(B, C, H, W)` into a FeatureMap (float32).
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './atomic';
import { GocorError } from './errors';
import type { FeatureMap } from './types';
import { invalid } from './validate';

export interface NpyArray {
  data: Float32Array | Float64Array;
  shape: number[];
  dtype: 'float32' | 'float64';
}

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);

async function readSource(source: string | Uint8Array, name: string): Promise<{ buf: Buffer; what: string }> {
  if (typeof source === 'string') {
    if (source.length === 0) throw invalid('non-empty path', name, source);
    try {
      return { buf: await readFile(source), what: source };
    } catch (err) {
      throw new GocorError(
        'ERR_GOCOR_IO',
        `cannot read ${source}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }
  if (source instanceof Uint8Array) {
    return {
      buf: Buffer.from(source.buffer, source.byteOffset, source.byteLength),
      what: `buffer of ${source.length} bytes`,
    };
  }
  throw invalid('path, Buffer or Uint8Array', name, source);
}

/** Parses a .npy file (path or bytes). Only float32/float64 little-endian C-order arrays are accepted. */
export async function readNpy(source: string | Uint8Array): Promise<NpyArray> {
  const { buf, what } = await readSource(source, 'source');
  const bad = (why: string) => new GocorError('ERR_GOCOR_IO', `${what} is not a supported .npy file: ${why}`);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(MAGIC)) throw bad('missing the \\x93NUMPY magic');
  const major = buf[6] as number;
  if (major !== 1 && major !== 2 && major !== 3) throw bad(`format version ${major} is unknown`);
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  if (start + headerLen > buf.length) throw bad('the header is truncated');
  const header = buf.toString(major === 3 ? 'utf8' : 'latin1', start, start + headerLen);
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined)
    throw bad('the header dictionary is malformed');
  if (fortran === 'True') throw bad('Fortran order is not supported (save with C order)');
  let dtype: NpyArray['dtype'];
  if (descr === '<f4' || descr === '|f4') dtype = 'float32';
  else if (descr === '<f8' || descr === '|f8') dtype = 'float64';
  else throw bad(`dtype ${descr} is not supported (float32 or float64 little-endian)`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => Number(s));
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw bad(`shape (${shapeText}) is malformed`);
  const count = shape.reduce((p, d) => p * d, 1);
  const bytes = dtype === 'float32' ? 4 : 8;
  const offset = start + headerLen;
  if (buf.length - offset !== count * bytes) {
    throw bad(`expected ${count * bytes} data bytes for shape (${shape.join(', ')}) but found ${buf.length - offset}`);
  }
  // Copy into an aligned buffer (the file's data offset need not be a multiple of 8).
  const raw = new ArrayBuffer(count * bytes);
  new Uint8Array(raw).set(buf.subarray(offset));
  const data = dtype === 'float32' ? new Float32Array(raw) : new Float64Array(raw);
  return { data, shape, dtype };
}

/** Encodes an array as .npy version 1.0 bytes (C order, little-endian). */
export function encodeNpy(data: Float32Array | Float64Array, shape: number[]): Buffer {
  if (!(data instanceof Float32Array) && !(data instanceof Float64Array)) {
    throw invalid('Float32Array or Float64Array', 'data', data);
  }
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw invalid('array of non-negative integers', 'shape', shape);
  }
  const count = shape.reduce((p, d) => p * d, 1);
  if (count !== data.length) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `Expected ${count} elements for shape (${shape.join(', ')}) but received ${data.length}`,
    );
  }
  const descr = data instanceof Float32Array ? '<f4' : '<f8';
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Pad so that the data starts at a multiple of 64 bytes, header ends with '\n'.
  const total = 10 + header.length + 1;
  header += `${' '.repeat((64 - (total % 64)) % 64)}\n`;
  const pre = Buffer.alloc(10);
  MAGIC.copy(pre, 0);
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.concat([pre, Buffer.from(header, 'latin1'), body]);
}

/** Writes a .npy file atomically (temporary file, then rename). */
export async function writeNpy(path: string, data: Float32Array | Float64Array, shape: number[]): Promise<void> {
  if (typeof path !== 'string' || path.length === 0) throw invalid('non-empty path', 'path', path);
  await writeFileAtomic(path, encodeNpy(data, shape));
}

/**
 * Loads a .npy feature file as a FeatureMap: shape `(C, H, W)` or `(B, C, H, W)`, float32 or float64
 * (converted to float32); `shape` is the file's own shape. Any other rank is ERR_GOCOR_SHAPE.
 */
export async function loadNpy(source: string | Uint8Array): Promise<FeatureMap & { shape: number[] }> {
  const a = await readNpy(source);
  if (a.shape.length !== 3 && a.shape.length !== 4) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `Expected a (C, H, W) or (B, C, H, W) array for a feature map but received shape (${a.shape.join(', ')})`,
    );
  }
  const [B, C, H, W] = (a.shape.length === 3 ? [1, ...a.shape] : a.shape) as [number, number, number, number];
  if (B * C * H * W === 0)
    throw new GocorError('ERR_GOCOR_SHAPE', `feature map shape (${a.shape.join(', ')}) is empty`);
  const data = a.data instanceof Float32Array ? a.data : Float32Array.from(a.data);
  return { data, batch: B, channels: C, height: H, width: W, shape: a.shape };
}
