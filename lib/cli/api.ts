/**
 * The library as the CLI sees it, loaded on first use: `gocor --help` and argument errors must work
 * even where the native addon is missing or broken, so nothing here is imported at start-up.
 */
import type * as Gocor from '../index';

export type Api = typeof Gocor;
export type { Flow, FlowMetrics } from '../index';

let cached: Api | undefined;

/** The library, loaded once. */
export function api(): Api {
  if (!cached) cached = require('../index') as Api;
  return cached;
}
