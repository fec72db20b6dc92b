/**
 * Distributed batch matching on BullMQ (Redis): the work behind `gocor queue add | worker | status`.
 *
 * Exactly-once outputs with many workers on many machines:
 * - One BullMQ job per pair. Its id is a hash of OUTDIR, the pair (number, paths) and the options that
 *   decide the result, so adding the same list again finds every id taken and adds nothing.
 * - A worker runs the pair with batch's runPair into OUTDIR/<i>-<name of a>/ (every file atomic,
 *   result.json last). A pair whose result.json already shows it complete (its worker was killed after
 *   writing it, before BullMQ heard of it) is not matched again.
 * - When a pair is finished (ok, or failed on its last attempt) its results line goes into the Redis
 *   hash `<prefix>:<queue>:gocor:lines:<outKey>` under its pair number, by a Lua script that returns how
 *   many lines the hash then holds (one atomic step, so concurrent workers count right, and a retried
 *   pair overwrites its own line instead of adding one). The worker whose line brings the hash to the
 *   list's total writes OUTDIR/results.jsonl from it, whole, in pair order, atomically.
 * - A job that BullMQ fails itself (stalled too often: its workers kept dying) never reaches a
 *   processor; the worker that sees its `failed` event, or else `status`, adds its line from its
 *   failedReason, and `status` assembles results.jsonl whenever completed + failed = total and the file
 *   is not yet assembled. So once `status` reports completed + failed = total, the file holds exactly
 *   one line per pair.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { debuglog } from 'node:util';
import type { Job, JobType, Queue, RedisClient, RedisOptions, Worker } from 'bullmq';
import { GocorError, type GocorErrorCode } from '../errors';
import { makeFolder, writeFileAtomic } from './atomic';
import { RESULTS_FILE, type ResultLine, resultsText } from './batch';
import { completedPair, fingerprint, type MatchSettings, type PairResult, pendingRecord, runPair } from './pair';
import type { PairSpec } from './pairs';

// bullmq is an optional peer dependency, loaded on the first queue command: gocor's own install
// runs no scripts, and bullmq brings msgpackr-extract, which has one (npm's --strict-allow-scripts
// would refuse it). Only `gocor queue` needs it.
type BullMQ = typeof import('bullmq');
let bullmqModule: BullMQ | undefined;
function bullmq(): BullMQ {
  if (!bullmqModule) {
    try {
      bullmqModule = require('bullmq') as BullMQ;
    } catch (err) {
      throw new GocorError(
        'ERR_GOCOR_IO',
        `gocor queue needs the optional package bullmq: run \`npm install bullmq@^5\` where gocor is installed (${(err as Error).message.split('\n')[0]})`,
      );
    }
  }
  return bullmqModule;
}

const debug = debuglog('gocor');

/** Where the queue lives: a redis:// or rediss:// URL and the queue's name. */
export interface QueueTarget {
  redis: string;
  queue: string;
}

/** What a job carries: everything a worker on any machine needs to run its pair. */
export interface PairJob {
  outDir: string;
  outKey: string;
  /** Pairs in this OUTDIR's list. */
  total: number;
  pair: {
    index: number;
    a: string;
    b: string;
    gt?: string;
    dir: string;
    /** A malformed list line: failed at once, never retried. */
    problem?: { code: string; message: string };
  };
  settings: MatchSettings;
}

/** Every state a job can be in: their counts add up to the queue's total. */
const ALL_STATES: JobType[] = [
  'active',
  'completed',
  'failed',
  'delayed',
  'prioritized',
  'waiting',
  'waiting-children',
  'paused',
];

const hash = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 32);

/** Redis options, and `ready()` to call once the first connection has succeeded. */
interface RedisConnection {
  options: RedisOptions;
  ready(): void;
}

/**
 * Redis options from a URL: redis://[user:password@]host[:port][/db], rediss:// for TLS. Before the
 * first connection succeeds, no reconnection is tried (unreachable Redis is one error line, at
 * once); after it, a lost connection is retried for about a minute, then `onGiveUp` is called.
 */
export function redisConnection(url: string, onGiveUp?: (err: GocorError) => void): RedisConnection {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    u = new URL('invalid://');
  }
  const db = u.pathname.replace(/^\//, '');
  if ((u.protocol !== 'redis:' && u.protocol !== 'rediss:') || !u.hostname || !/^\d{0,2}$/.test(db)) {
    throw new GocorError(
      'ERR_GOCOR_INVALID_ARG',
      `Expected a URL redis://host[:port][/db] (or rediss://) for --redis but received ${JSON.stringify(url)}`,
    );
  }
  let ready = false;
  const options: RedisOptions = {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port ? Number(u.port) : 6379,
    ...(u.username && { username: decodeURIComponent(u.username) }),
    ...(u.password && { password: decodeURIComponent(u.password) }),
    ...(db && { db: Number(db) }),
    ...(u.protocol === 'rediss:' && { tls: {} }),
    connectTimeout: 5000,
    // Called by ioredis after each failed (re)connection; null stops it trying.
    retryStrategy: (times: number) => {
      if (!ready) return null;
      if (times > 20) {
        onGiveUp?.(
          new GocorError('ERR_GOCOR_IO', `lost the connection to Redis at ${safeUrl(url)} and could not get it back`),
        );
        return null;
      }
      return Math.min(times * 500, 5000);
    },
  };
  return {
    options,
    ready: () => {
      ready = true;
    },
  };
}

/** The URL without its password, for messages. */
function safeUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

/** Waits for the queue's (or worker's) connection; an unreachable Redis becomes one ERR_GOCOR_IO. */
async function connected(target: QueueTarget, conn: Queue | Worker, redis: RedisConnection): Promise<RedisClient> {
  try {
    await conn.waitUntilReady();
    const client = await conn.client;
    redis.ready();
    return client;
  } catch (err) {
    throw new GocorError(
      'ERR_GOCOR_IO',
      `cannot reach Redis at ${safeUrl(target.redis)} (${(err as Error).message || (err as NodeJS.ErrnoException).code}); start redis-server there or fix --redis`,
      { cause: err },
    );
  }
}

/**
 * Lua: store one pair's line and return how many lines there are. With ARGV[3] = '1' the line is only
 * added when the pair has none (a processor's own line wins), and 0 is returned when it had one.
 */
const FINISH_PAIR = `
if ARGV[3] == '1' then
  if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return redis.call('HLEN', KEYS[1])`;
/** Lua: claim OUTDIR for one list (HSETNX) and return whichever list holds it. */
const CLAIM_OUTDIR = `
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])`;

const defined = new WeakSet<object>();
function scripts(client: RedisClient): RedisClient {
  if (!defined.has(client)) {
    client.defineCommand('gocorFinishPair', { numberOfKeys: 1, lua: FINISH_PAIR });
    client.defineCommand('gocorClaimOutdir', { numberOfKeys: 1, lua: CLAIM_OUTDIR });
    defined.add(client);
  }
  return client;
}

/** gocor's own keys, under the queue's BullMQ prefix (so removing the queue removes them too). */
function keys(conn: Queue | Worker, outKey = '') {
  return {
    outDirs: conn.toKey('gocor:outdirs'),
    lines: conn.toKey(`gocor:lines:${outKey}`),
    assembled: conn.toKey(`gocor:assembled:${outKey}`),
  };
}

interface OutDirInfo {
  list: string;
  total: number;
}

/** The deterministic job id of a pair: OUTDIR, its number and paths, and the options that decide the result. */
export function pairJobId(outDir: string, pair: PairSpec, settings: MatchSettings): string {
  return `pair-${hash(
    JSON.stringify([
      outDir,
      pair.index,
      pair.a,
      pair.b,
      pair.gt ?? '',
      fingerprint(settings.options),
      !!settings.allowSvg,
    ]),
  )}`;
}

function queueOf(target: QueueTarget, redis: RedisConnection): Queue {
  const q = new (bullmq().Queue)(target.queue, { connection: redis.options });
  // Errors of the connection surface where it is awaited; the emitter must not throw them again.
  q.on('error', (err) => debug(`queue: redis: ${err.message}`));
  return q;
}

export interface AddSummary {
  queue: string;
  outDir: string;
  total: number;
  added: number;
  results: string;
}

/**
 * Enqueues one job per pair (ids from pairJobId). OUTDIR is claimed for this list and these options:
 * a different list or other options into the same OUTDIR would mix two runs' lines, so it is refused.
 */
export async function addPairs(
  target: QueueTarget,
  pairs: PairSpec[],
  outDir: string,
  settings: MatchSettings,
  attempts: number,
): Promise<AddSummary> {
  const redis = redisConnection(target.redis);
  const queue = queueOf(target, redis);
  try {
    const client = scripts(await connected(target, queue, redis));
    await makeFolder(outDir);
    const outKey = hash(outDir);
    const jobs = pairs.map((p) => {
      const data: PairJob = {
        outDir,
        outKey,
        total: pairs.length,
        pair: {
          index: p.index,
          a: p.a,
          b: p.b,
          ...(p.gt && { gt: p.gt }),
          dir: p.dir,
          ...(p.problem && { problem: { code: p.problem.code, message: p.problem.message } }),
        },
        settings,
      };
      return {
        name: 'pair',
        data,
        opts: { jobId: pairJobId(outDir, p, settings), attempts, backoff: { type: 'exponential', delay: 1000 } },
      };
    });
    const info: OutDirInfo = { list: hash(jobs.map((j) => j.opts.jobId).join(',')), total: pairs.length };
    const k = keys(queue, outKey);
    const holder = JSON.parse(
      await client.runCommand('gocorClaimOutdir', [k.outDirs, outDir, JSON.stringify(info)]),
    ) as OutDirInfo;
    if (holder.list !== info.list) {
      throw new GocorError(
        'ERR_GOCOR_INVALID_ARG',
        `${outDir} already receives another pair list or other options (${holder.total} pairs) in queue ${target.queue}; give another -o`,
      );
    }
    const before = await queue.getJobCountByTypes(...ALL_STATES);
    for (let i = 0; i < jobs.length; i += 1000) await queue.addBulk(jobs.slice(i, i + 1000));
    const after = await queue.getJobCountByTypes(...ALL_STATES);
    return {
      queue: target.queue,
      outDir,
      total: pairs.length,
      added: Math.max(0, after - before),
      results: path.join(outDir, RESULTS_FILE),
    };
  } finally {
    await queue.close();
  }
}

/** Stores a finished pair's line; the line that completes its list assembles OUTDIR/results.jsonl. */
async function finishPair(
  client: RedisClient,
  conn: Queue | Worker,
  data: PairJob,
  line: ResultLine,
  keepExisting: boolean,
): Promise<void> {
  const k = keys(conn, data.outKey);
  const count = Number(
    await client.runCommand('gocorFinishPair', [
      k.lines,
      String(data.pair.index),
      JSON.stringify(line),
      keepExisting ? '1' : '0',
    ]),
  );
  if (count >= data.total) await assemble(client, conn, data.outDir, data.outKey);
}

/** Writes OUTDIR/results.jsonl from the lines in Redis, whole and atomically; returns how many lines. */
async function assemble(client: RedisClient, conn: Queue | Worker, outDir: string, outKey: string): Promise<number> {
  const k = keys(conn, outKey);
  const stored = await client.hgetall(k.lines);
  const lines = new Map<number, ResultLine>();
  for (const [index, json] of Object.entries(stored)) lines.set(Number(index), JSON.parse(json) as ResultLine);
  await writeFileAtomic(path.join(outDir, RESULTS_FILE), resultsText(lines));
  await client.set(k.assembled, lines.size);
  debug(`queue: assembled ${lines.size} lines into ${path.join(outDir, RESULTS_FILE)}`);
  return lines.size;
}

/** The line of a job that BullMQ failed without a processor finishing it (stalled too often). */
function lineOfFailedJob(job: Job<PairJob>): ResultLine {
  const { pair, settings } = job.data;
  const rec: PairResult = pendingRecord({ a: pair.a, b: pair.b, gt: pair.gt, index: pair.index }, settings);
  rec.error = { code: 'ERR_GOCOR_INTERNAL', message: `queue job failed: ${job.failedReason}` };
  rec.finishedAt = new Date(job.finishedOn ?? Date.now()).toISOString();
  return { ...rec, dir: pair.dir };
}

export interface WorkerOptions {
  concurrency: number;
  device?: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  /** Seconds a job's lock lasts unrenewed: a worker killed this long ago gives its job back. */
  lockSeconds: number;
  /** One line per finished pair. */
  log: (line: string) => void;
}

export interface RunningWorker {
  /** Finishes the jobs in flight, takes no new one, and closes the connections. */
  close(): Promise<void>;
  /** Rejects when the connection to Redis is lost for good. */
  lost: Promise<never>;
}

/** Starts a worker on the queue; it runs until closed. */
export async function startWorker(target: QueueTarget, wo: WorkerOptions): Promise<RunningWorker> {
  let giveUp: (err: GocorError) => void = () => undefined;
  const lost = new Promise<never>((_, reject) => {
    giveUp = reject;
  });
  lost.catch(() => undefined);
  const redis = redisConnection(target.redis, (err) => giveUp(err));
  const threads =
    wo.threads ??
    (wo.concurrency > 1 ? Math.max(1, Math.floor(os.availableParallelism() / wo.concurrency)) : undefined);
  let client: RedisClient | undefined;

  const processor = async (job: Job<PairJob>) => {
    const { outDir, pair } = job.data;
    const options = { ...job.data.settings.options };
    if (wo.device) options.device = wo.device;
    if (wo.threads !== undefined || options.threads === undefined) {
      if (threads === undefined) delete options.threads;
      else options.threads = threads;
    }
    const settings: MatchSettings = { ...job.data.settings, options };
    const attempts = job.opts.attempts ?? 1;
    debug(`queue: pair ${pair.index} (${pair.dir}) started, attempt ${job.attemptsMade + 1} of ${attempts}`);
    const input = { a: pair.a, b: pair.b, gt: pair.gt, index: pair.index };
    const dir = path.join(outDir, pair.dir);
    const problem = pair.problem && new GocorError(pair.problem.code as GocorErrorCode, pair.problem.message);
    const done = problem ? undefined : await completedPair(input, dir, settings);
    const rec = done ? { ...done, index: pair.index } : await runPair(input, dir, settings, problem);
    const last = rec.status === 'ok' || problem !== undefined || job.attemptsMade + 1 >= attempts;
    if (last) await finishPair(client as RedisClient, worker, job.data, { ...rec, dir: pair.dir }, false);
    if (rec.status === 'ok') {
      wo.log(`pair ${pair.index} (${pair.dir}) ok in ${((rec.timings?.totalMs ?? 0) / 1000).toFixed(2)} s`);
      return { index: pair.index, status: rec.status };
    }
    const message = `${rec.error?.code}: ${rec.error?.message}`;
    wo.log(
      `pair ${pair.index} (${pair.dir}) failed${last ? '' : ` (attempt ${job.attemptsMade + 1} of ${attempts}, will retry)`}: ${message}`,
    );
    throw problem ? new (bullmq().UnrecoverableError)(message) : new Error(message);
  };

  const worker = new (bullmq().Worker)<PairJob>(target.queue, processor, {
    connection: redis.options,
    concurrency: wo.concurrency,
    autorun: false,
    lockDuration: wo.lockSeconds * 1000,
    stalledInterval: wo.lockSeconds * 1000,
    // A dead worker's pair is given back twice; the third death fails it instead of retrying it forever.
    maxStalledCount: 2,
  });
  worker.on('error', (err) => debug(`queue: worker: ${err.message}`));
  worker.on('failed', (job) => {
    if (!job || !client) return;
    const c = client;
    // Only a job failed for good, and only if no processor stored its line (HSETNX).
    void job
      .getState()
      .then((state) => (state === 'failed' ? finishPair(c, worker, job.data, lineOfFailedJob(job), true) : undefined))
      .catch((err: Error) => debug(`queue: recording failed job ${job.id}: ${err.message}`));
  });
  try {
    client = scripts(await connected(target, worker, redis));
  } catch (err) {
    await worker.close().catch(() => undefined);
    throw err;
  }
  const running = worker.run();
  running.catch((err: Error) => giveUp(new GocorError('ERR_GOCOR_INTERNAL', `queue worker stopped: ${err.message}`)));
  return {
    lost,
    close: async () => {
      await worker.close();
      await running.catch(() => undefined);
    },
  };
}

export interface QueueStatus {
  queue: string;
  total: number;
  completed: number;
  failed: number;
  /** Waiting, delayed (a retry's backoff), prioritized or paused. */
  waiting: number;
  active: number;
  /** Pairs finished per second over the last (up to) 100 finished. */
  rate: number;
  /** Seconds left at that rate; null when unknown. */
  etaSeconds: number | null;
  /** results.jsonl of every OUTDIR in the queue, once its pairs are all finished. */
  results: string[];
}

/** The queue's counts; when every job is finished, makes sure each OUTDIR's results.jsonl is assembled. */
export async function queueStatus(target: QueueTarget): Promise<QueueStatus> {
  const redis = redisConnection(target.redis);
  const queue = queueOf(target, redis);
  try {
    const client = scripts(await connected(target, queue, redis));
    const c = await queue.getJobCounts(...ALL_STATES);
    const n = (t: JobType) => c[t] ?? 0;
    const total = ALL_STATES.reduce((s, t) => s + n(t), 0);
    const finished = n('completed') + n('failed');
    const recent = (await queue.getJobs(['completed', 'failed'], 0, 99, false))
      .map((j) => j.finishedOn ?? 0)
      .filter((t) => t > 0)
      .sort((x, y) => y - x)
      .slice(0, 100);
    const span = recent.length > 1 ? ((recent[0] as number) - (recent[recent.length - 1] as number)) / 1000 : 0;
    const rate = span > 0 ? (recent.length - 1) / span : 0;
    const left = total - finished;
    const results: string[] = [];
    if (total > 0 && left === 0) {
      const outDirs = await client.hgetall(keys(queue).outDirs);
      for (const [outDir, json] of Object.entries(outDirs)) {
        results.push(await ensureAssembled(client, queue, outDir, JSON.parse(json) as OutDirInfo));
      }
    }
    return {
      queue: target.queue,
      total,
      completed: n('completed'),
      failed: n('failed'),
      waiting: n('waiting') + n('delayed') + n('prioritized') + n('paused') + n('waiting-children'),
      active: n('active'),
      rate: Math.round(rate * 1000) / 1000,
      etaSeconds: left === 0 ? 0 : rate > 0 ? Math.round(left / rate) : null,
      results,
    };
  } finally {
    await queue.close();
  }
}

/** Assembles OUTDIR/results.jsonl unless it is already, adding the lines of jobs BullMQ failed itself. */
async function ensureAssembled(client: RedisClient, queue: Queue, outDir: string, info: OutDirInfo): Promise<string> {
  const outKey = hash(outDir);
  const k = keys(queue, outKey);
  const file = path.join(outDir, RESULTS_FILE);
  const exists = await stat(file).then(
    () => true,
    () => false,
  );
  if (exists && Number(await client.get(k.assembled)) === info.total) return file;
  const have = new Set(Object.keys(await client.hgetall(k.lines)).map(Number));
  if (have.size < info.total) {
    for (let start = 0; ; start += 1000) {
      const page = (await queue.getFailed(start, start + 999)) as Job<PairJob>[];
      for (const job of page) {
        if (job.data?.outKey !== outKey || have.has(job.data.pair.index)) continue;
        await client.runCommand('gocorFinishPair', [
          k.lines,
          String(job.data.pair.index),
          JSON.stringify(lineOfFailedJob(job)),
          '1',
        ]);
      }
      if (page.length < 1000) break;
    }
  }
  const count = await assemble(client, queue, outDir, outKey);
  if (count !== info.total) {
    throw new GocorError(
      'ERR_GOCOR_INTERNAL',
      `${file}: ${count} of ${info.total} pairs have a result line although the queue has no job left`,
    );
  }
  return file;
}
