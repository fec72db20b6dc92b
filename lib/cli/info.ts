/** `gocor info`: version, backends and build options. */
import { Command } from 'commander';
import { api } from './api';
import { examples, printJson } from './common';

export function infoCommand(): Command {
  return new Command('info')
    .summary('version, backends and build options')
    .description(
      'Shows the gocor version, the CPU and CUDA backends this build has and this machine offers, and how the addon was built.',
    )
    .option('--json', 'print as JSON')
    .addHelpText('after', examples(['gocor info', 'gocor info --json | jq .backends.cuda']))
    .action((opts: { json?: boolean }) => {
      const g = api();
      const b = g.backends();
      const build = g.buildInfo();
      const info = {
        version: g.version(),
        node: process.version,
        platform: `${process.platform}-${process.arch}`,
        backends: b,
        build,
      };
      if (opts.json) return printJson(info);
      const cuda = b.cuda.compiled
        ? b.cuda.available
          ? `available: ${b.cuda.devices} device(s)${b.cuda.name ? `, ${b.cuda.name}` : ''}${b.cuda.computeCapability ? ` (sm ${b.cuda.computeCapability})` : ''}`
          : `compiled in, not usable: ${b.cuda.reason}`
        : `not compiled in${b.cuda.reason ? ` (${b.cuda.reason})` : ''}`;
      const lines = [
        `gocor ${info.version} (node ${process.version}, ${info.platform})`,
        `cpu:   ${b.cpu.simd}${b.cpu.amx ? ' + AMX' : ''}, ${b.cpu.threads} threads`,
        `cuda:  ${cuda}`,
        `build: ${build.buildSystem}, ${build.compiler}, N-API ${build.napiVersion}, CUDA ${build.cuda ? 'on' : 'off'}`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
