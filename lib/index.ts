/**
 * gocor: GOCor (globally optimised correspondence volumes, NeurIPS 2020) for Node.js.
 * Every compute function returns a Promise and runs off the event loop.
 */

export { type Backends, backends, buildInfo, version } from './backends';
export { type CorrelateOptions, correlate } from './correlation';
export { dispose } from './dispose';
export { GocorError, type GocorErrorCode } from './errors';
export { DEFAULT_MAX_BYTES, memoryLimit, setMemoryLimit } from './exec';
// -- matching, features and flow (lib/match.ts, lib/features.ts, lib/flow.ts, lib/npy.ts) --
export {
  type ExtractFeaturesOptions,
  extractFeatures,
  type FeatureLevel,
  type FeaturePyramid,
} from './features';
export {
  type FlowMetrics,
  type FlowToColorOptions,
  flowMetrics,
  flowToColor,
  readFlo,
  resizeFlow,
  warpImage,
  writeFlo,
} from './flow';
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
export { type Flow, type MatchOptions, type MatchResult, match, matchFeatures, pyramidFromFeatureMap } from './match';
export {
  type FlowEstimate,
  type GluInputs,
  type GluOutput,
  type LoadNetworkOptions,
  loadNetwork,
  NETWORK_MODELS,
  Network,
  type NetworkMatchOptions,
  type NetworkModel,
  type NetworkSource,
  networkTensors,
  type PwcInputs,
  type PwcOutput,
  type Tensor,
} from './networks';
export { loadNpy, type NpyArray, readNpy, writeNpy } from './npy';
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
export { type CheckpointDtype, type CheckpointTensor, readCheckpoint } from './pth';
export { queueStats, setConcurrency } from './queue';
export type { DeviceOption, ExecOptions, FeatureMap, Image, Volume } from './types';
