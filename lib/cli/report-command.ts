/** `gocor report OUTDIR`: the static HTML page over a batch or match folder. */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { examples, printJson } from './common';
import { readPairList } from './pairs';
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
    .option('--list <file>', "the batch's pair list: thumbnails of its images A and B")
    .option('--dir <dir>', 'a folder of input images (the batch --dir, or where A and B of a match are)')
    .option('--json', 'print {path, pairs, ok, failed} as JSON')
    .addHelpText(
      'after',
      '\nThe report reads images inside OUTDIR only, and the inputs A and B named by --list or found in ' +
        '--dir: a result.json cannot make it read (and show) any other file.\n' +
        examples([
          'gocor report out/ --list pairs.csv',
          'gocor report out/ --dir frames/ -o /tmp/review && chromium /tmp/review/index.html',
        ]),
    )
    .action(async (outdir: string, opts: { out?: string; list?: string; dir?: string; json?: boolean }) => {
      const files = opts.list ? (await readPairList(opts.list)).flatMap((p) => [p.a, p.b]) : [];
      const res = await writeReport(path.resolve(outdir), opts.out ? path.resolve(opts.out) : undefined, {
        files,
        folders: opts.dir ? [path.resolve(opts.dir)] : [],
      });
      if (opts.json) printJson(res);
      else
        process.stderr.write(
          `gocor report: ${res.pairs} pairs (${res.failed} failed): ${pathToFileURL(res.path).href}\n`,
        );
    });
}
