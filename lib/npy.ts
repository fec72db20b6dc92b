/**
 * NumPy .npy files (format versions 1 and 2): float32 / float64, little-endian, C order.
 * `loadNpy` turns a feature file `(C, H, W)` or `(B, C, H, W)` into a FeatureMap (float32).
 */
import { writeFileAtomic } from './atomic';
import { GocorError } from './errors';
import { openRegularFile, readExactly } from './files';
import type { FeatureMap } from './types';
import { invalid } from './validate';

export interface NpyArray {
  data: Float32Array | Float64Array;
  shape: number[];
  dtype: 'float32' | 'float64';
}

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);

interface NpyHeader {
  dtype: NpyArray['dtype'];
  shape: number[];
  /** Where the data starts and how many bytes it holds. */
  offset: number;
  dataBytes: number;
}

/** numpy itself refuses headers longer than 10000 bytes unless told otherwise; this allows more, not gigabytes. */
const MAX_HEADER = 1 << 20;

/** The length of the prefix that holds the header, from the first 12 bytes (`total`: bytes available). */
function headerEnd(pre: Buffer, total: number, bad: (why: string) => GocorError): number {
  if (total < 10 || pre.length < 10 || !pre.subarray(0, 6).equals(MAGIC)) throw bad('missing the \\x93NUMPY magic');
  const major = pre[6] as number;
  if (major !== 1 && major !== 2 && major !== 3) throw bad(`format version ${major} is unknown`);
  if (major !== 1 && pre.length < 12) throw bad('the header is truncated');
  const headerLen = major === 1 ? pre.readUInt16LE(8) : pre.readUInt32LE(8);
  if (headerLen > MAX_HEADER) throw bad(`a header of ${headerLen} bytes is implausible`);
  const end = (major === 1 ? 10 : 12) + headerLen;
  if (end > total) throw bad('the header is truncated');
  return end;
}

/** Parses the header in `buf` (which holds at least the bytes up to headerEnd). */
function parseHeader(buf: Buffer, end: number, bad: (why: string) => GocorError): NpyHeader {
  const major = buf[6] as number;
  const header = buf.toString(major === 3 ? 'utf8' : 'latin1', major === 1 ? 10 : 12, end);
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
  const dims = shapeText.trim() === '' ? [] : shapeText.split(',').map((s) => s.trim());
  // "(3,)" has one empty field after its comma; nothing else may be empty.
  if (dims.length > 1 && dims[dims.length - 1] === '') dims.pop();
  // Decimal digits only: Number() would also take 0x2, 2.0, 2e0 and round 9007199254740993.
  const shape = dims.map((d) => (/^\d{1,16}$/.test(d) ? Number(d) : Number.NaN));
  if (shape.some((d) => !Number.isSafeInteger(d))) throw bad(`shape (${shapeText}) is malformed`);
  const bytes = dtype === 'float32' ? 4 : 8;
  const dataBytes = shape.reduce((p, d) => p * d, bytes);
  if (!Number.isSafeInteger(dataBytes)) throw bad(`shape (${shapeText}) is too large`);
  return { dtype, shape, offset: end, dataBytes };
}

function sizeError(h: NpyHeader, found: number, bad: (why: string) => GocorError): GocorError {
  return bad(`expected ${h.dataBytes} data bytes for shape (${h.shape.join(', ')}) but found ${found}`);
}

/** A path: header first, then exactly the data it announces, read straight into aligned memory. */
async function readNpyFile(file: string): Promise<NpyArray> {
  const bad = (why: string) => new GocorError('ERR_GOCOR_IO', `${file} is not a supported .npy file: ${why}`);
  const { fh, size } = await openRegularFile(file, '.npy file');
  try {
    const pre = Buffer.alloc(Math.min(12, size));
    await readExactly(fh, pre, 0, file);
    const end = headerEnd(pre, size, bad);
    const head = Buffer.alloc(end);
    await readExactly(fh, head, 0, file);
    const h = parseHeader(head, end, bad);
    if (size - end !== h.dataBytes) throw sizeError(h, size - end, bad);
    const raw = new Uint8Array(h.dataBytes);
    await readExactly(fh, raw, end, file);
    const data = h.dtype === 'float32' ? new Float32Array(raw.buffer) : new Float64Array(raw.buffer);
    return { data, shape: h.shape, dtype: h.dtype };
  } finally {
    await fh.close();
  }
}

/** Parses a .npy file (path or bytes). Only float32/float64 little-endian C-order arrays are accepted. */
export async function readNpy(source: string | Uint8Array): Promise<NpyArray> {
  if (typeof source === 'string') {
    if (source.length === 0) throw invalid('non-empty path', 'source', source);
    return readNpyFile(source);
  }
  if (!(source instanceof Uint8Array)) throw invalid('path, Buffer or Uint8Array', 'source', source);
  const what = `buffer of ${source.length} bytes`;
  const bad = (why: string) => new GocorError('ERR_GOCOR_IO', `${what} is not a supported .npy file: ${why}`);
  const buf = Buffer.from(source.buffer, source.byteOffset, source.byteLength);
  const end = headerEnd(buf, buf.length, bad);
  const h = parseHeader(buf, end, bad);
  if (buf.length - end !== h.dataBytes) throw sizeError(h, buf.length - end, bad);
  // Copy into an aligned buffer (the data offset need not be a multiple of 8), and away from the caller's.
  const raw = new ArrayBuffer(h.dataBytes);
  new Uint8Array(raw).set(buf.subarray(end));
  const data = h.dtype === 'float32' ? new Float32Array(raw) : new Float64Array(raw);
  return { data, shape: h.shape, dtype: h.dtype };
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
