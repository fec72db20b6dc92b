/** Validation of FeatureMap arguments. */
import { GocorError } from './errors';
import type { FeatureMap } from './types';
import { f32, int, invalid, object } from './validate';

export interface Dims {
  data: Float32Array;
  B: number;
  C: number;
  H: number;
  W: number;
}

const MAX_SIDE = 1 << 16;

/**
 * Checks a FeatureMap's shape (NCHW float32) and returns its dimensions. Its values are checked
 * where they are first read: by the native copy that takes them into a computation (finite, at
 * most MAX_VALUE in magnitude, checked as they are copied: one pass instead of a JavaScript one
 * before it), or with `values: true` by a caller that computes on them in JavaScript.
 */
export function featureMap(value: unknown, name: string, values = false): Dims {
  const o = object(value, name) as Partial<FeatureMap>;
  const B = o.batch === undefined ? 1 : int(o.batch, `${name}.batch`, 1, 4096);
  const C = int(o.channels, `${name}.channels`, 1, 1 << 16);
  const H = int(o.height, `${name}.height`, 1, MAX_SIDE);
  const W = int(o.width, `${name}.width`, 1, MAX_SIDE);
  if (!(o.data instanceof Float32Array)) throw invalid('Float32Array', `${name}.data`, o.data);
  const expected = B * C * H * W;
  if (o.data.length !== expected) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `Expected ${name}.data to hold batch*channels*height*width = ${B}*${C}*${H}*${W} = ${expected} values but received ${o.data.length}`,
    );
  }
  if (values) f32(o.data, `${name}.data`);
  return { data: o.data, B, C, H, W };
}

/** Checks that reference and query agree in batch and channels. */
export function sameBatchAndChannels(a: Dims, b: Dims): void {
  if (a.B !== b.B) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `reference and query must have the same batch, but received ${a.B} and ${b.B}`,
    );
  }
  if (a.C !== b.C) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `reference and query must have the same number of channels, but received ${a.C} and ${b.C}`,
    );
  }
}
