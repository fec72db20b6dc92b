/** `gocor correlate REF.npy QUERY.npy --method ... -o VOLUME.npy`: volumes from feature maps of any backbone. */
import path from 'node:path';
import { Command, Option } from 'commander';
import { GocorError } from '../errors';
import type { FeatureMap, Volume } from '../types';
import { api } from './api';
import { deviceOption, EXIT, examples, intArg, printJson, RANGES, threadsOption } from './common';

type Method = 'gocor-global' | 'gocor-local' | 'correlation-global' | 'correlation-local';

interface Opts {
  method: Method;
  params?: string;
  level?: string;
  numIter?: number;
  searchRadius?: number;
  device: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  out: string;
  json?: boolean;
  quiet?: boolean;
}

/** What is wrong with this combination of options (a usage error), or undefined. */
export function optionProblem(o: Opts): string | undefined {
  const local = o.method.endsWith('-local');
  if (o.method.startsWith('correlation') && (o.params !== undefined || o.numIter !== undefined))
    return `--params and --num-iter apply to the gocor methods, not ${o.method}`;
  if (o.level !== undefined && o.method !== 'gocor-local') return '--level applies to --method gocor-local';
  if (o.searchRadius !== undefined) {
    if (!local) return `--search-radius applies to the local methods, not ${o.method}`;
    const [lo, hi] = o.method === 'gocor-local' ? RANGES.gocorRadius : RANGES.correlationRadius;
    if (o.searchRadius < lo || o.searchRadius > hi)
      return `--search-radius of ${o.method} must be an integer between ${lo} and ${hi}, not ${o.searchRadius}`;
  }
  return undefined;
}

/** Computes the volume of `method` for reference and query feature maps (NCHW); options checked by optionProblem. */
export async function volumeOf(ref: FeatureMap, query: FeatureMap, o: Opts): Promise<Volume> {
  const g = api();
  const exec = { device: o.device, ...(o.threads !== undefined && { threads: o.threads }) };
  if (o.method.startsWith('correlation')) {
    const mode = o.method === 'correlation-global' ? 'global' : 'local';
    return g.correlate(ref, query, {
      mode,
      ...(mode === 'local' && o.searchRadius !== undefined && { searchRadius: o.searchRadius }),
      ...exec,
    });
  }
  const params = o.params !== undefined ? await g.loadParams(o.params) : undefined;
  const numIter = o.numIter !== undefined ? { numIter: o.numIter } : {};
  if (o.method === 'gocor-global') {
    if (params && !params.global)
      throw new GocorError('ERR_GOCOR_PARAMS', `${o.params} holds no global GOCor parameters`);
    return new g.GlobalGOCor({ ...(params?.global && { params: params.global }), ...numIter, ...exec }).correlate(
      ref,
      query,
    );
  }
  let local = params?.local;
  if (params && o.level !== undefined) {
    local = params.localLevels[o.level];
    if (!local) {
      const have = Object.keys(params.localLevels);
      throw new GocorError(
        'ERR_GOCOR_PARAMS',
        `${o.params} holds no local GOCor of level ${o.level}${have.length ? ` (levels: ${have.join(', ')})` : ''}`,
      );
    }
  }
  if (params && !local)
    throw new GocorError('ERR_GOCOR_PARAMS', `${o.params} holds no local GOCor parameters; pick one with --level`);
  return new g.LocalGOCor({
    ...(local && { params: local }),
    ...numIter,
    ...(o.searchRadius !== undefined && { searchRadius: o.searchRadius }),
    ...exec,
  }).correlate(ref, query);
}

export function correlateCommand(): Command {
  return new Command('correlate')
    .summary('correlation volume of two .npy feature maps')
    .description(
      'Reads two float32 feature maps (.npy, NCHW or CHW, e.g. from any CNN backbone) and writes the ' +
        'correlation volume as .npy. Shapes (spec): global [B, Hq*Wq, H, W] with element [b, qy*Wq+qx, y, x]; ' +
        'local [B, (2R+1)^2, H, W] with element [b, (dy+R)(2R+1)+(dx+R), y, x]. GOCor methods optimise the ' +
        'filters with K steepest-descent iterations; --params loads trained parameters (safetensors with the ' +
        "official names); without it, the paper's initial values are used.",
    )
    .argument('<ref>', 'reference feature map .npy')
    .argument('<query>', 'query feature map .npy')
    .addOption(
      new Option('-m, --method <method>', 'volume to compute')
        .choices(['gocor-global', 'gocor-local', 'correlation-global', 'correlation-local'])
        .makeOptionMandatory(),
    )
    .option('--params <file>', 'GOCor parameters (.safetensors)')
    .option('--level <n>', 'local GOCor only: the level of a PWC-Net parameter file (local_corr_<n>.*)')
    .addOption(
      new Option('--num-iter <k>', 'GOCor steepest-descent iterations (default 3)').argParser(
        intArg(...RANGES.gocorIters),
      ),
    )
    .addOption(
      new Option(
        '--search-radius <r>',
        `local methods: search radius R (default 4; ${RANGES.gocorRadius.join('..')} for gocor-local, ${RANGES.correlationRadius.join('..')} for correlation-local)`,
      ).argParser(intArg(...RANGES.correlationRadius)),
    )
    .addOption(deviceOption())
    .addOption(threadsOption())
    .requiredOption('-o, --out <file>', 'output volume .npy')
    .option('--json', 'print shape, method, device and time as JSON')
    .option('-q, --quiet', 'print nothing on success')
    .addHelpText(
      'after',
      examples([
        'gocor correlate ref.npy query.npy --method gocor-global -o volume.npy',
        'gocor correlate f1.npy f2.npy --method gocor-local --params glunet_gocor.safetensors --num-iter 3 -o local.npy',
        'gocor correlate f1.npy f2.npy --method correlation-local --search-radius 4 -o local.npy --json',
      ]),
    )
    .action(async (refPath: string, queryPath: string, o: Opts, cmd: Command) => {
      const problem = optionProblem(o);
      if (problem) cmd.error(`error: ${problem}`, { exitCode: EXIT.usage, code: 'gocor.usage' });
      const g = api();
      const t0 = process.hrtime.bigint();
      const [ref, query] = await Promise.all([g.loadNpy(refPath), g.loadNpy(queryPath)]);
      const t1 = process.hrtime.bigint();
      const vol = await volumeOf(ref, query, o);
      const t2 = process.hrtime.bigint();
      const out = path.resolve(o.out);
      await g.writeNpy(out, vol.data, vol.shape);
      const msOf = (a: bigint, b: bigint) => Math.round(Number(b - a) / 1e4) / 100;
      const info = {
        method: o.method,
        shape: vol.shape,
        device: vol.device,
        out,
        timings: { loadMs: msOf(t0, t1), computeMs: msOf(t1, t2), writeMs: msOf(t2, process.hrtime.bigint()) },
      };
      if (o.json) printJson(info);
      else if (!o.quiet) {
        process.stderr.write(
          `gocor correlate: ${o.method} volume [${vol.shape.join(', ')}] on ${vol.device} in ${(info.timings.computeMs / 1000).toFixed(3)} s; wrote ${out}\n`,
        );
      }
    });
}
