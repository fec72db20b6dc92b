/**
 * Ground truth for batch metrics: a flow as Middlebury .flo or .npy ([2,H,W], [1,2,H,W] or [H,W,2]),
 * or a disparity PNG of the first (left) image: 8-bit d in pixels, or 16-bit d*256 (KITTI), 0 = unknown;
 * the true flow is then (-d, 0).
 */
import path from 'node:path';
import sharp, { type Metadata } from 'sharp';
import { GocorError } from '../errors';
import { checkMemory } from '../exec';
import { readRegularFile } from '../files';
import { MAX_IMAGE_PIXELS } from '../image';
import { api, type Flow } from './api';

export interface GroundTruth {
  flow: Flow;
  /** 1 where the ground truth is known; undefined when all of it is. */
  valid?: Uint8Array;
}

/**
 * Reads a ground truth; `expected` (the flow's size) lets a disparity PNG of another size be refused
 * before decoding. Unknown vectors of a .flo / .npy ground truth (> 1e9 or non-finite) are left out
 * by flowMetrics itself.
 */
export async function loadGroundTruth(
  file: string,
  expected?: { width: number; height: number },
): Promise<GroundTruth> {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.flo') return { flow: await api().readFlo(file) };
  if (ext === '.npy') return { flow: await npyFlow(file) };
  if (ext === '.png') return disparityPng(file, expected);
  throw new GocorError(
    'ERR_GOCOR_INVALID_ARG',
    `Expected a ground truth .flo, .npy or disparity .png but received ${file}`,
  );
}

async function npyFlow(file: string): Promise<Flow> {
  const arr = await api().readNpy(file);
  const dims = [...arr.shape];
  while (dims.length > 3 && dims[0] === 1) dims.shift();
  const src = arr.data;
  if (dims.length === 3 && dims[0] === 2) {
    return { data: Float32Array.from(src), width: dims[2] as number, height: dims[1] as number };
  }
  if (dims.length === 3 && dims[2] === 2) {
    const H = dims[0] as number;
    const W = dims[1] as number;
    const data = new Float32Array(2 * H * W);
    for (let p = 0; p < H * W; p++) {
      data[p] = src[2 * p] as number;
      data[H * W + p] = src[2 * p + 1] as number;
    }
    return { data, width: W, height: H };
  }
  throw new GocorError(
    'ERR_GOCOR_SHAPE',
    `Expected a flow of shape [2,H,W] or [H,W,2] in ${file} but found [${arr.shape.join(',')}]`,
  );
}

/** Refused before decoding: more pixels than images may have, or than the memory limit allows. */
async function disparityPng(file: string, expected?: { width: number; height: number }): Promise<GroundTruth> {
  const bytes = await readRegularFile(file, 'disparity ground truth');
  const open = () => sharp(bytes, { failOn: 'error', limitInputPixels: MAX_IMAGE_PIXELS });
  let meta: Metadata;
  try {
    meta = await open().metadata();
  } catch (err) {
    throw imageError(file, err);
  }
  const W = meta.width ?? 0;
  const H = meta.height ?? 0;
  const sixteen = meta.depth === 'ushort';
  // Decoded channels, the extracted disparity, the flow (2 floats) and the valid mask, per pixel.
  const perPixel = (meta.channels ?? 4) * (sixteen ? 2 : 1) + (sixteen ? 2 : 1) + 8 + 1;
  checkMemory(W * H * perPixel, `reading disparity ground truth ${file} (${W}x${H})`, 'use a smaller ground truth');
  if (expected && (W !== expected.width || H !== expected.height)) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `ground truth ${file} is ${W}x${H} but the flow is ${expected.width}x${expected.height}`,
    );
  }
  try {
    const { data, info } = await open()
      .extractChannel(0)
      .raw({ depth: sixteen ? 'ushort' : 'uchar' })
      .toBuffer({ resolveWithObject: true });
    const n = info.width * info.height;
    const values = sixteen ? new Uint16Array(data.buffer, data.byteOffset, n) : data;
    const flow = new Float32Array(2 * n);
    const valid = new Uint8Array(n);
    for (let p = 0; p < n; p++) {
      const raw = values[p] as number;
      valid[p] = raw > 0 ? 1 : 0;
      flow[p] = raw > 0 ? -(sixteen ? raw / 256 : raw) : 0;
    }
    return { flow: { data: flow, width: info.width, height: info.height }, valid };
  } catch (err) {
    throw imageError(file, err);
  }
}

function imageError(file: string, err: unknown): GocorError {
  const msg = (err as Error).message;
  if (/pixel limit/i.test(msg)) {
    return new GocorError(
      'ERR_GOCOR_TOO_LARGE',
      `disparity ground truth ${file} has more than ${MAX_IMAGE_PIXELS} pixels`,
      {
        cause: err,
      },
    );
  }
  return new GocorError('ERR_GOCOR_IMAGE', `cannot read disparity ground truth ${file}: ${msg}`, { cause: err });
}
