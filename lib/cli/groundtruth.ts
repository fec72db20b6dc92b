/**
 * Ground truth for batch metrics: a flow as Middlebury .flo or .npy ([2,H,W], [1,2,H,W] or [H,W,2]),
 * or a disparity PNG of the first (left) image: 8-bit d in pixels, or 16-bit d*256 (KITTI), 0 = unknown;
 * the true flow is then (-d, 0).
 */
import path from 'node:path';
import sharp from 'sharp';
import { GocorError } from '../errors';
import { api, type Flow } from './api';

export interface GroundTruth {
  flow: Flow;
  /** 1 where the ground truth is known; undefined when all of it is. */
  valid?: Uint8Array;
}

/** Unknown vectors of a .flo / .npy ground truth (> 1e9 or non-finite) are left out by flowMetrics itself. */
export async function loadGroundTruth(file: string): Promise<GroundTruth> {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.flo') return { flow: await api().readFlo(file) };
  if (ext === '.npy') return { flow: await npyFlow(file) };
  if (ext === '.png') return disparityPng(file);
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

async function disparityPng(file: string): Promise<GroundTruth> {
  try {
    const meta = await sharp(file).metadata();
    const sixteen = meta.depth === 'ushort';
    const { data, info } = await sharp(file)
      .extractChannel(0)
      .raw({ depth: sixteen ? 'ushort' : 'uchar' })
      .toBuffer({ resolveWithObject: true });
    const W = info.width;
    const H = info.height;
    const values = sixteen ? new Uint16Array(data.buffer, data.byteOffset, W * H) : data;
    const flow = new Float32Array(2 * W * H);
    const valid = new Uint8Array(W * H);
    for (let p = 0; p < W * H; p++) {
      const raw = values[p] as number;
      valid[p] = raw > 0 ? 1 : 0;
      flow[p] = raw > 0 ? -(sixteen ? raw / 256 : raw) : 0;
    }
    return { flow: { data: flow, width: W, height: H }, valid };
  } catch (err) {
    throw new GocorError('ERR_GOCOR_IMAGE', `cannot read disparity ground truth ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}
