/** Image decoding with sharp: PNG, JPEG, WebP, TIFF (and whatever else libvips reads) to CHW float32 in [0, 1]. */
import { stat } from 'node:fs/promises';
import sharp, { type Metadata } from 'sharp';
import { GocorError } from './errors';
import { checkMemory } from './exec';
import type { Image } from './types';
import { bool, int, invalid, knownKeys, object, optObject } from './validate';

export interface LoadImageOptions {
  /** Decode to one gray channel (default false: RGB, alpha dropped). */
  gray?: boolean;
  /** Resize (bilinear-like, libvips) to exactly this size. */
  resize?: { width: number; height: number };
  /**
   * Accept SVG (default false). librsvg renders an SVG with the files it references from its own
   * folder, so an SVG from elsewhere can pull local images into the result: refused unless asked for.
   */
  allowSvg?: boolean;
}

/** Images whose header announces more pixels than this are refused before decoding (ERR_GOCOR_TOO_LARGE). */
export const MAX_IMAGE_PIXELS = 16384 * 16384;

/** What an image's header says, read without decoding its pixels. */
export interface ImageHeader {
  width: number;
  height: number;
  /** Stored channels and bytes per channel sample. */
  channels: number;
  sampleBytes: number;
  format: string;
}

interface Source {
  /** What sharp reads: a path, or a private copy of the caller's bytes. */
  input: string | Buffer;
  what: string;
}

async function openSource(source: unknown): Promise<Source> {
  if (typeof source !== 'string' && !(source instanceof Uint8Array))
    throw invalid('path, Buffer or Uint8Array', 'source', source);
  if (typeof source === 'string') {
    if (source.length === 0) throw invalid('non-empty path', 'source', source);
    const st = await stat(source).catch((err: NodeJS.ErrnoException) => {
      throw new GocorError('ERR_GOCOR_IO', `cannot read image ${source}: ${err.code ?? err.message}`, { cause: err });
    });
    if (!st.isFile()) throw new GocorError('ERR_GOCOR_IO', `cannot read image ${source}: not a file`);
    return { input: source, what: source };
  }
  if (source.length === 0) throw new GocorError('ERR_GOCOR_IMAGE', 'cannot decode image: the buffer is empty');
  // A copy: libvips reads the bytes on its own threads after this returns, while the caller may
  // resize, transfer or overwrite its (possibly resizable or shared) buffer. Encoded images are small.
  return { input: Buffer.from(source), what: `buffer of ${source.length} bytes` };
}

function decodeError(what: string, err: unknown): GocorError {
  if (err instanceof GocorError) return err;
  const msg = (err as Error).message;
  if (/pixel limit/i.test(msg)) {
    return new GocorError('ERR_GOCOR_TOO_LARGE', `image ${what} has more than ${MAX_IMAGE_PIXELS} pixels: ${msg}`, {
      cause: err,
    });
  }
  return new GocorError('ERR_GOCOR_IMAGE', `cannot decode image ${what}: ${msg}`, { cause: err });
}

async function readHeader(src: Source, allowSvg: boolean): Promise<ImageHeader> {
  let meta: Metadata;
  try {
    meta = await sharp(src.input, { failOn: 'error', limitInputPixels: MAX_IMAGE_PIXELS }).metadata();
  } catch (err) {
    throw decodeError(src.what, err);
  }
  if (meta.format === 'svg' && !allowSvg) {
    throw new GocorError(
      'ERR_GOCOR_IMAGE',
      `image ${src.what} is an SVG, refused by default: librsvg would render it with files from its folder (pass allowSvg: true, or --allow-svg, if you trust it)`,
    );
  }
  const sampleBytes = { ushort: 2, short: 2, uint: 4, int: 4, float: 4, complex: 8, double: 8, dpcomplex: 16 }[
    meta.depth as string
  ];
  return {
    width: meta.width ?? 0,
    height: meta.height ?? 0,
    channels: meta.channels ?? 4,
    sampleBytes: typeof sampleBytes === 'number' ? sampleBytes : 1,
    format: meta.format ?? 'unknown',
  };
}

/** Reads an image's header (path, Buffer or Uint8Array) without decoding its pixels. */
export async function imageHeader(
  source: string | Buffer | Uint8Array,
  opts?: Pick<LoadImageOptions, 'allowSvg'>,
): Promise<ImageHeader> {
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', ['allowSvg']);
  return readHeader(await openSource(source), bool(o.allowSvg, 'options.allowSvg', false));
}

/**
 * Bytes that decoding an image of this header takes at its peak: the decoded input (libvips may hold
 * it whole), the 8-bit pixels at the output size and the float32 result.
 */
export function decodeBytes(h: ImageHeader, opts?: LoadImageOptions): number {
  const C = opts?.gray ? 1 : 3;
  const out = (opts?.resize?.width ?? h.width) * (opts?.resize?.height ?? h.height);
  return h.width * h.height * h.channels * h.sampleBytes + out * C * (1 + 4);
}

/**
 * Decodes an image file path, Buffer or Uint8Array. Result: `data` CHW float32 in [0, 1],
 * `channels` 3 (or 1 with `gray`), `height`, `width`. Corrupt or unsupported input rejects with
 * ERR_GOCOR_IMAGE, SVG too unless `allowSvg`. The header is read first: an image whose decoding would
 * exceed the memory limit is ERR_GOCOR_TOO_LARGE before any pixel is decoded. A Buffer or Uint8Array
 * is copied first, so the caller may change it at once.
 */
export async function loadImage(source: string | Buffer | Uint8Array, opts?: LoadImageOptions): Promise<Image> {
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', ['gray', 'resize', 'allowSvg']);
  const gray = bool(o.gray, 'options.gray', false);
  const allowSvg = bool(o.allowSvg, 'options.allowSvg', false);
  let resize: { width: number; height: number } | undefined;
  if (o.resize !== undefined) {
    const r = object(o.resize, 'options.resize');
    resize = {
      width: int(r.width, 'options.resize.width', 1, 16384),
      height: int(r.height, 'options.resize.height', 1, 16384),
    };
  }
  const src = await openSource(source);
  const header = await readHeader(src, allowSvg);
  const outW = resize?.width ?? header.width;
  const outH = resize?.height ?? header.height;
  checkMemory(
    decodeBytes(header, { gray, ...(resize && { resize }) }),
    `decoding image ${src.what} (${header.width}x${header.height}${resize ? ` to ${outW}x${outH}` : ''})`,
    'use options.resize',
  );
  try {
    let pipeline = sharp(src.input, { failOn: 'error', limitInputPixels: MAX_IMAGE_PIXELS }).rotate();
    if (resize) pipeline = pipeline.resize(resize.width, resize.height, { fit: 'fill', kernel: 'linear' });
    pipeline = gray ? pipeline.grayscale() : pipeline.removeAlpha().toColourspace('srgb');
    const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    const C = gray ? 1 : 3;
    if (info.channels !== C) throw new Error(`decoder produced ${info.channels} channels, expected ${C}`);
    const H = info.height;
    const W = info.width;
    const plane = H * W;
    const out = new Float32Array(C * plane);
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < C; c++) out[c * plane + p] = (data[p * C + c] as number) / 255;
    }
    return { data: out, channels: C, height: H, width: W };
  } catch (err) {
    throw decodeError(src.what, err);
  }
}
