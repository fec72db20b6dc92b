/**
 * The batch runner: many pairs, a pool of `concurrency` workers, resumable, interruptible.
 *
 * State lives in the pair folders: each pair's result.json is written last and marks it complete.
 * OUTDIR/results.jsonl (one line per pair, in pair order) is always rewritten whole and atomically
 * from those records, so a resumed run can never duplicate or tear a line.
 */
import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { GocorError } from '../errors';
import { removeStaleTemps, writeFileAtomic } from './atomic';
import { completedPair, type MatchSettings, type PairResult, RESULT_FILE, runPair } from './pair';
import type { PairSpec } from './pairs';
import type { Progress } from './progress';

export const RESULTS_FILE = 'results.jsonl';
const LOCK_FILE = '.gocor-batch.lock';

export interface BatchOptions {
  outDir: string;
  settings: MatchSettings;
  concurrency: number;
  /** Redo every pair, complete or not. */
  force: boolean;
}

export interface BatchSummary {
  total: number;
  ok: number;
  failed: number;
  /** Pairs found complete from an earlier run and not redone. */
  skipped: number;
  /** Pairs not attempted because the run was interrupted. */
  notRun: number;
  interrupted: boolean;
  seconds: number;
  /** Pairs processed in this run (not skipped) per second of this run. */
  pairsPerSecond: number;
  results: string;
}

/** Set `requested` (e.g. on SIGINT) to let in-flight pairs finish and start no new one. */
export interface StopSignal {
  requested: boolean;
}

type Line = PairResult & { dir: string };

/** Holds OUTDIR for one process; a lock left by a killed run (its pid gone) is taken over. */
async function lock(outDir: string): Promise<() => Promise<void>> {
  const file = path.join(outDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => unlink(file).catch(() => undefined);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new GocorError('ERR_GOCOR_IO', `cannot create ${file}: ${(err as Error).message}`, { cause: err });
      }
      const pid = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new GocorError(
          'ERR_GOCOR_IO',
          `another gocor batch (pid ${pid}) is writing ${outDir}; wait for it or remove ${file}`,
        );
      }
      await unlink(file).catch(() => undefined);
    }
  }
  throw new GocorError('ERR_GOCOR_IO', `cannot lock ${outDir}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function previousRecord(pair: PairSpec, outDir: string): Promise<PairResult | undefined> {
  try {
    const rec = JSON.parse(await readFile(path.join(outDir, pair.dir, RESULT_FILE), 'utf8')) as PairResult;
    return rec.a?.path === pair.a && rec.b?.path === pair.b ? rec : undefined;
  } catch {
    return undefined;
  }
}

export async function runBatch(
  pairs: PairSpec[],
  opts: BatchOptions,
  progress: Progress,
  stop: StopSignal,
): Promise<BatchSummary> {
  const started = Date.now();
  await mkdir(opts.outDir, { recursive: true });
  const unlock = await lock(opts.outDir);
  try {
    await removeStaleTemps(opts.outDir);
    const lines = new Map<number, Line>();
    const todo: PairSpec[] = [];
    let skipped = 0;
    for (const pair of pairs) {
      const dir = path.join(opts.outDir, pair.dir);
      const done = opts.force || pair.problem ? undefined : await completedPair(pair, dir, opts.settings);
      if (done) {
        lines.set(pair.index, { ...done, index: pair.index, dir: pair.dir });
        skipped++;
        continue;
      }
      // A failed or partial pair keeps its earlier record in results.jsonl until it is redone.
      const earlier = await previousRecord(pair, opts.outDir);
      if (earlier) lines.set(pair.index, { ...earlier, index: pair.index, dir: pair.dir });
      todo.push(pair);
    }

    const resultsPath = path.join(opts.outDir, RESULTS_FILE);
    let writing: Promise<void> = Promise.resolve();
    let lastWrite = 0;
    let trailing: NodeJS.Timeout | undefined;
    // At most one rewrite a second (the file grows with the batch), but never more than a second stale.
    const writeResults = (force: boolean): Promise<void> => {
      const wait = 1000 - (Date.now() - lastWrite);
      if (!force && wait > 0) {
        trailing ??= setTimeout(() => {
          trailing = undefined;
          void writeResults(true);
        }, wait);
        return writing;
      }
      clearTimeout(trailing);
      trailing = undefined;
      lastWrite = Date.now();
      const text = [...lines.keys()]
        .sort((x, y) => x - y)
        .map((k) => `${JSON.stringify(lines.get(k))}\n`)
        .join('');
      // Chained so that an older snapshot can never be renamed over a newer one.
      writing = writing.then(() => writeFileAtomic(resultsPath, text));
      return writing;
    };
    await writeResults(true);

    let matched = 0;
    let failed = 0;
    const counts = () => ({ done: skipped + matched + failed, failed, skipped });
    progress.update(counts());

    let next = 0;
    const worker = async () => {
      while (!stop.requested && next < todo.length) {
        const pair = todo[next++] as PairSpec;
        const rec = await runPair(
          { a: pair.a, b: pair.b, gt: pair.gt, index: pair.index },
          path.join(opts.outDir, pair.dir),
          opts.settings,
          pair.problem,
        );
        lines.set(pair.index, { ...rec, dir: pair.dir });
        if (rec.status === 'ok') matched++;
        else {
          failed++;
          progress.log(`pair ${pair.index} (${pair.dir}) failed: ${rec.error?.code}: ${rec.error?.message}`);
        }
        progress.update(counts());
        void writeResults(false);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency, todo.length)) }, worker));
    await writeResults(true);
    progress.stop();

    const seconds = (Date.now() - started) / 1000;
    const processed = matched + failed;
    const notRun = pairs.length - skipped - processed;
    return {
      total: pairs.length,
      ok: skipped + matched,
      failed,
      skipped,
      notRun,
      interrupted: stop.requested && notRun > 0,
      seconds: Math.round(seconds * 1000) / 1000,
      pairsPerSecond: seconds > 0 ? Math.round((processed / seconds) * 1000) / 1000 : 0,
      results: resultsPath,
    };
  } finally {
    await unlock();
  }
}
