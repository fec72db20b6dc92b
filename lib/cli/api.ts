/**
 * The library as the CLI sees it, loaded on first use: `gocor --help` and argument errors must work
 * even where the native addon is missing or broken, so nothing here is imported at start-up.
 */
import type * as Gocor from '../index';
import type { FeatureMap, Image } from '../types';

/** Dense flow on the grid of image a, pointing into b: a(x) ~ b(x + flow(x)). data: [2, H, W] (u then v). */
export interface Flow {
  data: Float32Array;
  width: number;
  height: number;
  /** [H, W] in [0, 1] when the method provides one. */
  confidence?: Float32Array;
  device?: 'cpu' | 'cuda';
}

export interface FlowMetrics {
  aepe: number;
  pck1: number;
  pck3: number;
  pck5: number;
}

/** The image-to-flow part of the API (lib/match.ts, lib/flow.ts, lib/npy.ts). */
export interface MatchApi {
  match(a: Image | string | Buffer, b: Image | string | Buffer, opts?: Record<string, unknown>): Promise<Flow>;
  writeFlo(path: string, flow: Flow): Promise<void> | void;
  readFlo(path: string): Promise<Flow> | Flow;
  flowToColor(flow: Flow): Promise<Buffer>;
  warpImage(b: Image, flow: Flow): Promise<Image>;
  flowMetrics(flow: Flow, gt: Flow, valid?: Uint8Array): FlowMetrics | Promise<FlowMetrics>;
  loadNpy(path: string): Promise<NpyArray> | NpyArray;
  writeNpy(path: string, array: { data: Float32Array; shape: number[] }): Promise<void> | void;
}

/** What `loadNpy` gives back: a FeatureMap, possibly with the file's own shape beside it. */
export type NpyArray = FeatureMap & { shape?: number[] };

export type Api = typeof Gocor & MatchApi;

let cached: Api | undefined;

/** The library, loaded once. */
export function api(): Api {
  if (!cached) cached = require('../index') as Api;
  return cached;
}
