/** `gocor bench`: a quick speed check of plain correlation against GOCor on this machine. */
import { Command, Option } from 'commander';
import type { FeatureMap, Volume } from '../types';
import { api } from './api';
import { deviceOption, examples, intArg, printJson, threadsOption } from './common';

interface Opts {
  size: number;
  localSize: number;
  channels: number;
  numIter: number;
  repeat: number;
  device: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  json?: boolean;
}

/** Deterministic features (xorshift32, uniform in [-1, 1)), L2-normalised per position as GLU-Net feeds them. */
function features(C: number, H: number, W: number, seed: number): FeatureMap {
  const data = new Float32Array(C * H * W);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = (s >>> 0) / 2 ** 31 - 1;
  }
  return api().l2normalize({ data, channels: C, height: H, width: W });
}

async function timeIt(
  repeat: number,
  run: () => Promise<Volume>,
): Promise<{ medianMs: number; minMs: number; device: string }> {
  let device = '';
  device = (await run()).device; // warm-up: first-call costs (pool start, CUDA context) are not the steady state
  const times: number[] = [];
  for (let r = 0; r < repeat; r++) {
    const t = process.hrtime.bigint();
    await run();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  const round = (v: number) => Math.round(v * 1000) / 1000;
  return { medianMs: round(times[Math.floor(times.length / 2)] as number), minMs: round(times[0] as number), device };
}

export function benchCommand(): Command {
  return new Command('bench')
    .summary('quick speed check: correlation vs GOCor on this machine')
    .description(
      'Times plain correlation and GOCor, global and local, on random L2-normalised features (one warm-up ' +
        'call, then the median of --repeat calls). For full benchmarks see bench/ in the repository.',
    )
    .addOption(new Option('--size <n>', 'global grid side (H = W = n)').argParser(intArg(2, 128)).default(32))
    .addOption(new Option('--local-size <n>', 'local grid side').argParser(intArg(2, 1024)).default(64))
    .addOption(new Option('--channels <c>', 'feature channels').argParser(intArg(1, 4096)).default(256))
    .addOption(new Option('--num-iter <k>', 'GOCor iterations').argParser(intArg(0, 64)).default(3))
    .addOption(new Option('--repeat <n>', 'timed calls per case').argParser(intArg(1, 1000)).default(5))
    .addOption(deviceOption())
    .addOption(threadsOption())
    .option('--json', 'print as JSON')
    .addHelpText(
      'after',
      examples(['gocor bench', 'gocor bench --size 16 --channels 512 --device cpu --threads 1 --json']),
    )
    .action(async (o: Opts) => {
      const g = api();
      const exec = { device: o.device, ...(o.threads !== undefined && { threads: o.threads }) };
      const gr = features(o.channels, o.size, o.size, 1);
      const gq = features(o.channels, o.size, o.size, 2);
      const lr = features(o.channels, o.localSize, o.localSize, 3);
      const lq = features(o.channels, o.localSize, o.localSize, 4);
      const globalGocor = new g.GlobalGOCor({ numIter: o.numIter, ...exec });
      const localGocor = new g.LocalGOCor({ numIter: o.numIter, ...exec });
      const cases = [
        {
          name: 'correlation-global',
          grid: `${o.size}x${o.size}`,
          run: () => g.correlate(gr, gq, { mode: 'global', ...exec }),
        },
        { name: 'gocor-global', grid: `${o.size}x${o.size}`, run: () => globalGocor.correlate(gr, gq) },
        {
          name: 'correlation-local',
          grid: `${o.localSize}x${o.localSize}`,
          run: () => g.correlate(lr, lq, { mode: 'local', searchRadius: 4, ...exec }),
        },
        { name: 'gocor-local', grid: `${o.localSize}x${o.localSize}`, run: () => localGocor.correlate(lr, lq) },
      ];
      const results = [];
      for (const c of cases)
        results.push({ name: c.name, grid: c.grid, channels: o.channels, ...(await timeIt(o.repeat, c.run)) });
      const out = {
        version: g.version(),
        numIter: o.numIter,
        repeat: o.repeat,
        threads: o.threads ?? g.backends().cpu.threads,
        results,
      };
      if (o.json) return printJson(out);
      const lines = [`gocor bench (${o.channels} channels, GOCor ${o.numIter} iterations, median of ${o.repeat})`];
      for (const r of results)
        lines.push(
          `  ${r.name.padEnd(19)} ${r.grid.padStart(9)}  ${r.medianMs.toFixed(2).padStart(9)} ms  (${r.device})`,
        );
      const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(1) : '--');
      lines.push(
        `  GOCor costs ${ratio(results[1]?.medianMs ?? 0, results[0]?.medianMs ?? 0)}x the global and ${ratio(results[3]?.medianMs ?? 0, results[2]?.medianMs ?? 0)}x the local correlation`,
      );
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
