/** Plain feature correlation, global and local (spec sections 5.1 and 7). */

import { GocorError } from './errors';
import { checkMemory, EXEC_KEYS, execOptions } from './exec';
import { featureMap, sameBatchAndChannels } from './featuremap';
import { native } from './native';
import { runNative } from './queue';
import type { ExecOptions, FeatureMap, Volume } from './types';
import { knownKeys, oneOf, optInt, optObject } from './validate';

export interface CorrelateOptions extends ExecOptions {
  /** 'global' (default): every reference position against every query position; 'local': a (2R+1)^2 window. */
  mode?: 'global' | 'local';
  /** Local mode only: search radius R, 0..32, default 4. */
  searchRadius?: number;
}

/**
 * Plain correlation of two feature maps (NCHW float32).
 * - global: reference (B,C,H,W), query (B,C,Hq,Wq) -> shape [B, Hq*Wq, H, W],
 *   element [b, qy*Wq+qx, y, x] = <reference(y,x), query(qy,qx)>.
 * - local: reference and query (B,C,H,W) -> shape [B, (2R+1)^2, H, W],
 *   element [b, (dy+R)(2R+1)+(dx+R), y, x] = (1/C)<reference(y,x), query(y+dy,x+dx)>, 0 outside.
 */
export async function correlate(reference: FeatureMap, query: FeatureMap, opts?: CorrelateOptions): Promise<Volume> {
  const o = optObject(opts, 'options');
  knownKeys(o, 'options', ['mode', 'searchRadius', ...EXEC_KEYS]);
  const ref = featureMap(reference, 'reference');
  const qry = featureMap(query, 'query');
  sameBatchAndChannels(ref, qry);
  const mode = oneOf(o.mode, 'options.mode', ['global', 'local'] as const, 'global');
  const exec = execOptions(o, 'options');
  const { signal, ...nexec } = exec;
  const n = native();

  if (mode === 'global') {
    if (o.searchRadius !== undefined) {
      throw new GocorError('ERR_GOCOR_INVALID_ARG', 'options.searchRadius applies to mode "local" only');
    }
    const M = qry.H * qry.W;
    const dims = { B: ref.B, C: ref.C, H: ref.H, W: ref.W, Hq: qry.H, Wq: qry.W };
    checkMemory(n.estimateBytes('corrGlobal', dims, nexec), 'this global correlation', 'use smaller feature maps');
    const r = await runNative(() => n.corrGlobal(ref.data, qry.data, dims, nexec), signal);
    return { data: r.data, shape: [ref.B, M, ref.H, ref.W], kind: 'global', device: r.device };
  }

  const R = optInt(o.searchRadius, 'options.searchRadius', 0, 32, 4);
  if (ref.H !== qry.H || ref.W !== qry.W) {
    throw new GocorError(
      'ERR_GOCOR_SHAPE',
      `local correlation needs reference and query of the same size, but received ${ref.H}x${ref.W} and ${qry.H}x${qry.W}`,
    );
  }
  const D = (2 * R + 1) ** 2;
  const dims = { B: ref.B, C: ref.C, H: ref.H, W: ref.W, R };
  checkMemory(
    n.estimateBytes('corrLocal', dims, nexec),
    'this local correlation',
    'use a smaller searchRadius or feature map',
  );
  const r = await runNative(() => n.corrLocal(ref.data, qry.data, dims, nexec), signal);
  return { data: r.data, shape: [ref.B, D, ref.H, ref.W], kind: 'local', device: r.device };
}
