/**
 * Batch progress on stderr: a cli-progress bar with rate and ETA on a terminal, a plain line every
 * few seconds otherwise (logs, CI), nothing with --quiet. Rate and ETA count only pairs processed in
 * this run, so pairs skipped on a resume do not make the estimate optimistic.
 */
import { SingleBar } from 'cli-progress';

export interface ProgressCounts {
  done: number;
  failed: number;
  skipped: number;
}

export interface Progress {
  update(counts: ProgressCounts): void;
  /** A line that must not be torn by the bar (warnings). */
  log(line: string): void;
  stop(): void;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

interface Rates {
  rate: string;
  eta: string;
}

function rates(total: number, c: ProgressCounts, startedAt: number): Rates {
  const worked = c.done - c.skipped;
  const elapsed = (Date.now() - startedAt) / 1000;
  const perSecond = worked > 0 && elapsed > 0 ? worked / elapsed : 0;
  return {
    rate: perSecond > 0 ? perSecond.toFixed(perSecond < 10 ? 2 : 1) : '--',
    eta: perSecond > 0 ? formatDuration((total - c.done) / perSecond) : '--',
  };
}

export function createProgress(total: number, mode: 'bar' | 'lines' | 'none', intervalSeconds: number): Progress {
  const startedAt = Date.now();
  if (mode === 'none') return { update() {}, log() {}, stop() {} };
  if (mode === 'bar') {
    const bar = new SingleBar({
      stream: process.stderr,
      format:
        'gocor batch |{bar}| {value}/{total} pairs | {rate} pairs/s | ETA {etaText} | {failed} failed, {skipped} skipped',
      barsize: 30,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
    });
    let value = 0;
    let payload = { rate: '--', etaText: '--', failed: 0, skipped: 0 };
    bar.start(total, value, payload);
    return {
      update(c) {
        const r = rates(total, c, startedAt);
        value = c.done;
        payload = { rate: r.rate, etaText: r.eta, failed: c.failed, skipped: c.skipped };
        bar.update(value, payload);
      },
      log(line) {
        bar.stop();
        process.stderr.write(`${line}\n`);
        bar.start(total, value, payload);
      },
      stop() {
        bar.stop();
      },
    };
  }
  let last: ProgressCounts = { done: 0, failed: 0, skipped: 0 };
  let lastLine = '';
  const print = () => {
    const r = rates(total, last, startedAt);
    const pct = total > 0 ? Math.floor((100 * last.done) / total) : 100;
    const line = `gocor batch: ${last.done}/${total} pairs (${pct}%), ${last.failed} failed, ${last.skipped} skipped, ${r.rate} pairs/s, ETA ${r.eta}`;
    if (line !== lastLine) process.stderr.write(`${line}\n`);
    lastLine = line;
  };
  const timer = setInterval(print, Math.max(0.1, intervalSeconds) * 1000);
  timer.unref();
  return {
    update(c) {
      last = { ...c };
    },
    log(line) {
      process.stderr.write(`${line}\n`);
    },
    stop() {
      clearInterval(timer);
    },
  };
}
