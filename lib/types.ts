/** Public data types. All tensors are float32, row-major (C order). */

/** Where a computation runs. 'auto' uses CUDA when this build has it and a GPU is present, else the CPU. */
export type DeviceOption = 'auto' | 'cpu' | 'cuda';

/** Options every compute call takes. */
export interface ExecOptions {
  /** Default 'auto'. An explicit 'cuda' without a usable GPU rejects with ERR_GOCOR_CUDA_UNAVAILABLE. */
  device?: DeviceOption;
  /** CPU threads for this call, 1..1024; default: all threads of gocor's shared pool. */
  threads?: number;
  /**
   * Cancels the call (it rejects with ERR_GOCOR_ABORTED): at once while it waits in gocor's queue,
   * at its next stage boundary while it runs (match: between pyramid levels; GOCor: between iterations).
   */
  signal?: AbortSignal;
}

/** A decoded image: `data` is CHW float32 in [0, 1]. */
export interface Image {
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
}

/** A feature map, layout NCHW (`[batch, channels, height, width]`), float32. */
export interface FeatureMap {
  data: Float32Array;
  /** Default 1. */
  batch?: number;
  channels: number;
  height: number;
  width: number;
}

/**
 * A correlation volume.
 * - global: shape `[B, Hq*Wq, H, W]`, element `[b, qy*Wq+qx, y, x] = <reference(y,x), query(qy,qx)>`
 *   (for GOCor: the optimised filter of (y,x) against query (qy,qx)).
 * - local: shape `[B, (2R+1)^2, H, W]`, element `[b, (dy+R)(2R+1)+(dx+R), y, x] =
 *   (1/C)<reference(y,x), query(y+dy, x+dx)>`, zero outside the query.
 */
export interface Volume {
  data: Float32Array;
  shape: number[];
  kind: 'global' | 'local';
  /** The backend that computed it. */
  device: 'cpu' | 'cuda';
}
