/**
 * gocor: GOCor (globally optimised correspondence volumes, NeurIPS 2020) for Node.js.
 * Every compute function returns a Promise and runs off the event loop.
 */

export { type Backends, backends, buildInfo, version } from './backends';
export { type CorrelateOptions, correlate } from './correlation';
export { GocorError, type GocorErrorCode } from './errors';
export {
  GlobalGOCor,
  type GlobalGOCorOptions,
  type GocorResult,
  type IterationDiagnostics,
  LocalGOCor,
  type LocalGOCorOptions,
  l2normalize,
} from './gocor';
export { type LoadImageOptions, loadImage } from './image';
export {
  defaultGlobalParams,
  defaultLocalParams,
  type GlobalParams,
  type GocorParams,
  type LocalParams,
  loadParams,
  saveParams,
  type TensorRecord,
} from './params';
export type { DeviceOption, ExecOptions, FeatureMap, Image, Volume } from './types';
// -- matching, features and flow (lib/match.ts, lib/features.ts, lib/flow.ts, lib/npy.ts) --
export {
  extractFeatures,
  type ExtractFeaturesOptions,
  type FeatureLevel,
  type FeaturePyramid,
} from './features';
export { match, matchFeatures, pyramidFromFeatureMap, type Flow, type MatchOptions, type MatchResult } from './match';
export {
  flowMetrics,
  flowToColor,
  readFlo,
  resizeFlow,
  warpImage,
  writeFlo,
  type FlowMetrics,
  type FlowToColorOptions,
} from './flow';
export { loadNpy, readNpy, writeNpy, type NpyArray } from './npy';
