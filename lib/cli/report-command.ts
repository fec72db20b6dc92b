/** `gocor report OUTDIR`: the static HTML page over a batch or match folder. */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { examples, printJson } from './common';
import { writeReport } from './report';

export function reportCommand(): Command {
  return new Command('report')
    .summary('static HTML page over a batch (no server needed)')
    .description(
      'Writes OUTDIR/report/index.html and its thumbnails (one self-contained folder; open it from disk): ' +
        'per pair thumbnails of A, B and the flow colour, B warped onto A with a slider and a blink toggle ' +
        'to compare it with A, AEPE and PCK-1/3/5 when ground truth was given, time and status; columns ' +
        'sort on click (e.g. worst AEPE first). Add ?sort=aepe to the URL to open it sorted by error.',
    )
    .argument('<outdir>', 'the -o folder of gocor batch or gocor match')
    .option('-o, --out <dir>', 'report folder (default: OUTDIR/report)')
    .option('--json', 'print {path, pairs, ok, failed} as JSON')
    .addHelpText(
      'after',
      examples(['gocor report out/', 'gocor report out/ -o /tmp/review && chromium /tmp/review/index.html']),
    )
    .action(async (outdir: string, opts: { out?: string; json?: boolean }) => {
      const res = await writeReport(path.resolve(outdir), opts.out ? path.resolve(opts.out) : undefined);
      if (opts.json) printJson(res);
      else
        process.stderr.write(
          `gocor report: ${res.pairs} pairs (${res.failed} failed): ${pathToFileURL(res.path).href}\n`,
        );
    });
}
