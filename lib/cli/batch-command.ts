/** `gocor batch LIST -o OUTDIR` (or `--dir DIR`): many pairs, resumable, with progress and a results.jsonl. */
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { type BatchSummary, runBatch, type StopSignal } from './batch';
import {
  EXIT,
  examples,
  intArg,
  type MatchCliOptions,
  matchOptionList,
  matchSettings,
  onStopSignals,
  printJson,
} from './common';
import { type PairSpec, pairFolder, readPairList } from './pairs';
import { createProgress } from './progress';
import { writeReport } from './report';

interface Opts extends MatchCliOptions {
  out: string;
  dir?: string;
  concurrency: number;
  force?: boolean;
  report?: boolean;
  progressInterval: number;
  json?: boolean;
  quiet?: boolean;
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0.1 || n > 86400)
    throw new InvalidArgumentError('expected seconds between 0.1 and 86400');
  return n;
}

/**
 * The pairs of a command's LIST or `--dir DIR` (exactly one of them, else a usage error). Files of
 * DIR without a partner are named on stderr unless `quiet`.
 */
export async function commandPairs(
  cmd: Command,
  list: string | undefined,
  dir: string | undefined,
  quiet: boolean,
): Promise<PairSpec[]> {
  if ((list === undefined) === (dir === undefined)) {
    cmd.error('error: give either a pair list or --dir DIR (not both)', { exitCode: EXIT.usage, code: 'gocor.usage' });
  }
  if (dir === undefined) return readPairList(list as string);
  const { pairs, unpaired } = await pairFolder(path.resolve(dir));
  if (!quiet && unpaired.length) {
    const names = `${unpaired.slice(0, 5).join(', ')}${unpaired.length > 5 ? ', ...' : ''}`;
    const name = cmd.parent?.parent ? `${cmd.parent.name()} ${cmd.name()}` : cmd.name();
    process.stderr.write(`gocor ${name}: ${unpaired.length} file(s) without a partner ignored: ${names}\n`);
  }
  return pairs;
}

export function batchCommand(): Command {
  const cmd = new Command('batch')
    .summary('match many pairs from a list or a folder (resumable)')
    .description(
      'Matches every pair of LIST, a CSV file with one pair per line: a,b[,gt] (paths relative to the ' +
        "list's folder or absolute; optional header line a,b,gt; blank lines and lines starting with # are " +
        'skipped; quote paths that hold commas). gt, when given, is a ground-truth flow (.flo, .npy [2,H,W]) ' +
        'or an 8-bit disparity .png of A (flow = (-d, 0), 0 = unknown); AEPE and PCK-1/3/5 are then recorded.\n\n' +
        'Or --dir DIR pairs the images of a folder by name: <stem>1 with <stem>2, <stem>L with <stem>R, ' +
        '<stem>left with <stem>right, <stem>_a with <stem>_b (case-insensitive, optional _ or - before the ' +
        "tag); <stem>gt / <stem>_gt (.flo, .npy or .png) is that pair's ground truth. Pairs are numbered in " +
        'name order of their stems.\n\n' +
        'Pair i (1-based, in list order) writes the files of `gocor match` into OUTDIR/<i>-<name of a>/, and ' +
        'OUTDIR/results.jsonl holds one JSON line per pair (status, timings, metrics, error). Rerunning the ' +
        'same command resumes: pairs whose result.json (written last) matches the same inputs and options ' +
        'are skipped, failed or partial pairs are redone. A failing pair is recorded and the batch goes on. ' +
        'Ctrl-C stops after the pairs in flight (a second Ctrl-C quits at once; every file is written ' +
        'atomically, so nothing half-written is left that looks complete).\n\n' +
        'Exit code: 0 all pairs ok, 1 some pair failed, 2 usage error, 130 interrupted.',
    )
    .argument('[list]', 'CSV pair list')
    .requiredOption('-o, --out <dir>', 'output folder')
    .option('--dir <dir>', 'pair the images of this folder instead of reading a list');
  for (const o of matchOptionList()) cmd.addOption(o);
  cmd
    .addOption(
      new Option('-j, --concurrency <n>', 'pairs matched at the same time (threads are shared out)')
        .argParser(intArg(1, 64))
        .default(1),
    )
    .option('--force', 'redo every pair, even complete ones')
    .option('--report', 'write the HTML report (OUTDIR/report/index.html) at the end')
    .addOption(
      new Option('--progress-interval <seconds>', 'seconds between progress lines when stderr is not a terminal')
        .argParser(seconds)
        .default(10),
    )
    .option('--json', 'print the summary as JSON on stdout')
    .option('-q, --quiet', 'no progress and no summary on stderr')
    .addHelpText(
      'after',
      examples([
        'gocor batch pairs.csv -o out/',
        'gocor batch --dir frames/ -o out/ --concurrency 2 --report',
        'gocor batch pairs.csv -o out/ --method correlation --json > summary.json',
        '# pairs.csv',
        'a,b,gt',
        'img/0001_1.png,img/0001_2.png,gt/0001.flo',
        '/data/left.jpg,/data/right.jpg',
      ]),
    )
    .action(async (list: string | undefined, opts: Opts) => {
      const pairs = await commandPairs(cmd, list, opts.dir, !!opts.quiet);
      const settings = matchSettings(opts);
      if (settings.options.threads === undefined && opts.concurrency > 1) {
        settings.options.threads = Math.max(1, Math.floor(os.availableParallelism() / opts.concurrency));
      }
      const mode = opts.quiet ? 'none' : process.stderr.isTTY ? 'bar' : 'lines';

      const stop: StopSignal = { requested: false };
      const offSignals = onStopSignals('batch', () => {
        stop.requested = true;
        if (!opts.quiet)
          process.stderr.write('\ngocor batch: stopping after the pairs in flight (Ctrl-C again to quit now)\n');
      });
      let summary: BatchSummary;
      const out = path.resolve(opts.out);
      try {
        const progress = createProgress(pairs.length, mode, opts.progressInterval);
        summary = await runBatch(
          pairs,
          { outDir: out, settings, concurrency: opts.concurrency, force: !!opts.force },
          progress,
          stop,
        );
      } finally {
        offSignals();
      }
      let report: string | undefined;
      if (opts.report && !summary.interrupted) {
        report = (await writeReport(out, undefined, { files: pairs.flatMap((p) => [p.a, p.b]) })).path;
      }
      if (opts.json) printJson({ ...summary, ...(report && { report }) });
      if (!opts.quiet) {
        const state = summary.interrupted
          ? `interrupted, ${summary.notRun} not run; rerun the same command to resume`
          : 'done';
        process.stderr.write(
          `gocor batch: ${state}: ${summary.total} pairs, ${summary.ok} ok (${summary.skipped} already complete), ${summary.failed} failed, ` +
            `${summary.seconds.toFixed(1)} s, ${summary.pairsPerSecond.toFixed(2)} pairs/s; results in ${summary.results}\n`,
        );
        if (report) process.stderr.write(`gocor batch: report in ${report}\n`);
      }
      process.exitCode = summary.interrupted ? EXIT.interrupted : summary.failed > 0 ? EXIT.failed : EXIT.ok;
    });
  return cmd;
}
