/** `gocor queue add | worker | status`: batch matching spread over many workers through BullMQ on Redis. */
import path from 'node:path';
import { Command, Option } from 'commander';
import { commandPairs } from './batch-command';
import {
  EXIT,
  errorLine,
  examples,
  intArg,
  type MatchCliOptions,
  matchOptionList,
  matchSettings,
  onStopSignals,
  printJson,
} from './common';
import { formatDuration } from './progress';
import { addPairs, type QueueStatus, type QueueTarget, queueStatus, startWorker } from './queue';

interface TargetOpts {
  redis: string;
  queue: string;
}

interface AddOpts extends TargetOpts, MatchCliOptions {
  out: string;
  dir?: string;
  attempts: number;
  json?: boolean;
}

const target = (o: TargetOpts): QueueTarget => ({ redis: o.redis, queue: o.queue });

function withTarget(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--redis <url>', 'Redis server: redis://[user:password@]host[:port][/db]')
        .env('GOCOR_REDIS')
        .default('redis://127.0.0.1:6379'),
    )
    .addOption(new Option('--queue <name>', 'queue name').default('gocor'));
}

function addCommand(): Command {
  const cmd = withTarget(
    new Command('add')
      .summary('enqueue one job per pair of a list or a folder')
      .description(
        'Enqueues one job per pair of LIST (the CSV format of `gocor batch`) or of --dir DIR, with the pair ' +
          'numbering and per-pair folders of batch: pair i writes OUTDIR/<i>-<name of a>/. OUTDIR (and the ' +
          'images) must be paths that every worker can reach with the same name, e.g. a shared mount. Job ids ' +
          'come from OUTDIR, the pair and the options that decide the result, so adding the same list again ' +
          'adds nothing. When every pair is finished, OUTDIR/results.jsonl holds one line per pair, in pair ' +
          'order, as batch writes it.',
      )
      .argument('[list]', 'CSV pair list')
      .requiredOption('-o, --out <dir>', 'output folder (shared by all workers)')
      .option('--dir <dir>', 'pair the images of this folder instead of reading a list'),
  );
  for (const o of matchOptionList()) cmd.addOption(o);
  cmd
    .addOption(
      new Option('--attempts <n>', 'tries of a failing pair before it is failed for good')
        .argParser(intArg(1, 100))
        .default(3),
    )
    .option('--json', 'print the summary as JSON on stdout')
    .addHelpText(
      'after',
      examples([
        'gocor queue add pairs.csv -o /shared/runs/ --redis redis://queue-host:6379 --queue q1 --quality fast',
        'gocor queue add --dir /shared/frames/ -o /shared/runs/ --queue q1',
      ]),
    )
    .action(async (list: string | undefined, opts: AddOpts) => {
      const pairs = await commandPairs(cmd, list, opts.dir, !!opts.json);
      const summary = await addPairs(target(opts), pairs, path.resolve(opts.out), matchSettings(opts), opts.attempts);
      if (opts.json) printJson(summary);
      else {
        process.stderr.write(
          `gocor queue: added ${summary.added} of ${summary.total} pairs to queue ${summary.queue} ` +
            `(${summary.total - summary.added} were queued already); results in ${summary.results} once all are done\n`,
        );
      }
    });
  return cmd;
}

function workerCommand(): Command {
  const cmd = withTarget(
    new Command('worker')
      .summary('match the queued pairs until stopped')
      .description(
        'Takes pairs from the queue and matches them, until stopped. SIGTERM or Ctrl-C finishes the pairs in ' +
          'flight, takes no new one and exits 0 (a second signal quits at once). A worker that dies (SIGKILL, ' +
          'power loss) holds its pairs only until their lock runs out (--lock-duration); another worker then ' +
          'retries them. Start as many workers as you like, on any machine that reaches Redis and OUTDIR.',
      ),
  );
  cmd
    .addOption(
      new Option('-j, --concurrency <n>', 'pairs matched at the same time (threads are shared out)')
        .argParser(intArg(1, 64))
        .default(1),
    )
    .addOption(
      new Option('--device <device>', "where to compute (default: the job's, auto)").choices(['auto', 'cpu', 'cuda']),
    )
    .addOption(
      new Option('--threads <n>', 'CPU threads per pair (default: all, shared out)').argParser(intArg(1, 1024)),
    )
    .addOption(
      new Option('--lock-duration <seconds>', "seconds a dead worker's pair stays locked before another retries it")
        .argParser(intArg(1, 3600))
        .default(30),
    )
    .option('-q, --quiet', 'no line per finished pair')
    .addHelpText(
      'after',
      examples([
        'gocor queue worker --redis redis://queue-host:6379 --queue q1',
        'gocor queue worker --queue q1 --concurrency 2 --device cuda',
      ]),
    )
    .action(
      async (
        opts: TargetOpts & {
          concurrency: number;
          device?: 'auto' | 'cpu' | 'cuda';
          threads?: number;
          lockDuration: number;
          quiet?: boolean;
        },
      ) => {
        const log = (line: string) => {
          if (!opts.quiet) process.stderr.write(`gocor queue: ${line}\n`);
        };
        const worker = await startWorker(target(opts), {
          concurrency: opts.concurrency,
          device: opts.device,
          threads: opts.threads,
          lockSeconds: opts.lockDuration,
          log,
        });
        const stop = new Promise<void>((resolve) => {
          onStopSignals('queue', () => {
            log('stopping after the pairs in flight (signal again to quit now)');
            void worker.close().then(resolve, resolve);
          });
        });
        log(`worker ${process.pid} on queue ${opts.queue}, concurrency ${opts.concurrency}`);
        try {
          await Promise.race([stop, worker.lost]);
        } catch (err) {
          // Redis lost for good: the pairs in flight are retried elsewhere once their lock runs out.
          process.stderr.write(`${errorLine(err)}\n`);
          process.exit(EXIT.failed);
        }
        log('stopped');
        process.exitCode = EXIT.ok;
      },
    );
  return cmd;
}

function statusLine(s: QueueStatus): string {
  const done = s.completed + s.failed;
  const rate = s.rate > 0 ? `${s.rate.toFixed(s.rate < 10 ? 2 : 1)} pairs/s` : '-- pairs/s';
  const eta = s.etaSeconds === null ? '--' : formatDuration(s.etaSeconds);
  return (
    `gocor queue ${s.queue}: ${done}/${s.total} done (${s.completed} completed, ${s.failed} failed), ` +
    `${s.waiting} waiting, ${s.active} active, ${rate}, ETA ${eta}` +
    (s.results.length ? `; results in ${s.results.join(', ')}` : '')
  );
}

function statusCommand(): Command {
  const cmd = withTarget(
    new Command('status')
      .summary("the queue's progress: total, completed, failed, waiting, active, rate, ETA")
      .description(
        "Prints the queue's progress on one line (or --json). When completed + failed = total, it also makes " +
          'sure that each OUTDIR/results.jsonl of the queue is assembled (one line per pair, in pair order).',
      )
      .option('--json', 'print total, completed, failed, waiting, active, rate, etaSeconds, results as JSON')
      .addHelpText('after', examples(['gocor queue status --queue q1', 'gocor queue status --queue q1 --json'])),
  );
  cmd.action(async (opts: TargetOpts & { json?: boolean }) => {
    const s = await queueStatus(target(opts));
    if (opts.json) printJson(s);
    else process.stdout.write(`${statusLine(s)}\n`);
  });
  return cmd;
}

export function queueCommand(): Command {
  const cmd = new Command('queue')
    .summary('spread a batch over many workers and machines (BullMQ on Redis)')
    .description(
      'Batch matching through a BullMQ queue on Redis: `add` enqueues the pairs of a list, any number of ' +
        '`worker`s on any machines match them, `status` reports progress. Every pair is written exactly ' +
        'once into OUTDIR/<i>-<name of a>/ and OUTDIR/results.jsonl, as `gocor batch` writes them.',
    )
    .addHelpText(
      'after',
      examples([
        'redis-server --port 6379 &',
        'gocor queue add pairs.csv -o /shared/runs/ --queue q1 --quality fast',
        'gocor queue worker --queue q1 &   # as many as you like, on any machine',
        'gocor queue status --queue q1',
      ]),
    );
  for (const sub of [addCommand(), workerCommand(), statusCommand()]) {
    cmd.addCommand(sub);
  }
  return cmd;
}
