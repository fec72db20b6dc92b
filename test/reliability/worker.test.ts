/**
 * A worker thread ended with gocor calls queued or running (`worker.terminate()`, or
 * `process.exit()` inside it) must not take the process down: the calls are dropped or finish,
 * and their completions do not throw into a terminating environment. Runs in a child process
 * against `dist/` (build first with `npm run build:ts`).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const CHILD = path.join(__dirname, 'worker-child.js');

describe('reliability: worker threads ended with work in flight', () => {
  it.each(['terminate', 'exit'])('%s: the process survives 12 rounds', (how) => {
    const r = spawnSync(process.execPath, [CHILD, how, '12'], { encoding: 'utf8', timeout: 60_000 });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(r.stdout.trim()).toBe('ok 12');
  });
});
