/** Image decoding with sharp: PNG, JPEG, WebP, TIFF (and whatever else libvips reads) to CHW float32 in [0, 1]. */
import { stat } from 'node:fs/promises';
import sharp from 'sharp';
import { GocorError } from './errors';
import { checkMemory } from './exec';
import type { Image } from './types';
import { bool, int, invalid, knownKeys, object, optObject } from './validate';

export interface LoadImageOptions {
  /** Decode to one gray channel (default false: RGB, alpha dropped). */
  gray?: boolean;
  /** Resize (bilinear-like, libvips) to exactly this size. */
  resize?: { width: number; height: number };
}

/** Images whose header announces more pixels than this are refused before decoding (ERR_GOCOR_TOO_LARGE). */
export const MAX_IMAGE_PIXELS = 16384 * 16384;

/**
 * Decodes an image file path, Buffer or Uint8Array. Result: `data` CHW float32 in [0, 1],
 * `channels` 3 (or 1 with `gray`), `height`, `width`. Corrupt or unsupported input rejects with ERR_GOCOR_IMAGE.
 */
export async function loadImage(source: string | Buffer | Uint8Array, opts?: LoadImageOptions): Promise<Image> {
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', ['gray', 'resize']);
  const gray = bool(o.gray, 'options.gray', false);
  let resize: { width: number; height: number } | undefined;
  if (o.resize !== undefined) {
    const r = object(o.resize, 'options.resize');
    resize = {
      width: int(r.width, 'options.resize.width', 1, 16384),
      height: int(r.height, 'options.resize.height', 1, 16384),
    };
  }
  if (typeof source !== 'string' && !(source instanceof Uint8Array))
    throw invalid('path, Buffer or Uint8Array', 'source', source);
  if (typeof source === 'string' && source.length === 0) throw invalid('non-empty path', 'source', source);
  if (source instanceof Uint8Array && source.length === 0) {
    throw new GocorError('ERR_GOCOR_IMAGE', 'cannot decode image: the buffer is empty');
  }
  if (typeof source === 'string') {
    const st = await stat(source).catch((err: NodeJS.ErrnoException) => {
      throw new GocorError('ERR_GOCOR_IO', `cannot read image ${source}: ${err.code ?? err.message}`, { cause: err });
    });
    if (!st.isFile()) throw new GocorError('ERR_GOCOR_IO', `cannot read image ${source}: not a file`);
  }
  const what = typeof source === 'string' ? source : `buffer of ${source.length} bytes`;
  const input = typeof source === 'string' ? source : Buffer.from(source.buffer, source.byteOffset, source.byteLength);
  try {
    // The header says how large the decoded float image will be: refuse before decoding.
    const meta = await sharp(input, { failOn: 'error', limitInputPixels: MAX_IMAGE_PIXELS }).metadata();
    const outW = resize?.width ?? meta.width ?? 0;
    const outH = resize?.height ?? meta.height ?? 0;
    checkMemory(4 * (gray ? 1 : 3) * outW * outH, `decoding image ${what} (${outW}x${outH})`, 'use options.resize');
    let pipeline = sharp(input, { failOn: 'error', limitInputPixels: MAX_IMAGE_PIXELS }).rotate();
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
    if (err instanceof GocorError) throw err;
    const msg = (err as Error).message;
    if (/pixel limit/i.test(msg)) {
      throw new GocorError('ERR_GOCOR_TOO_LARGE', `image ${what} has more than ${MAX_IMAGE_PIXELS} pixels: ${msg}`, {
        cause: err,
      });
    }
    throw new GocorError('ERR_GOCOR_IMAGE', `cannot decode image ${what}: ${msg}`, { cause: err });
  }
}
