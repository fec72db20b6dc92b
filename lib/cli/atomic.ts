/**
 * Atomic output for the CLI: every file appears under its final name complete or not at all
 * (temporary file in the same folder, fsync, rename), so an interrupted batch never leaves a
 * half-written file that looks finished. Temporary names are `.<name>.gocor-<pid>-<8 hex>.tmp`.
 */
import { mkdir, readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { tempWriter, writeFileAtomic } from '../atomic';
import { GocorError } from '../errors';

export { writeFileAtomic };

/** JSON with a trailing newline, atomically. */
export function writeJsonAtomic(target: string, value: unknown): Promise<void> {
  return writeFileAtomic(target, `${JSON.stringify(value, null, 2)}\n`);
}

/** Creates the output folder `dir` (and its parents); a file in the way is ERR_GOCOR_IO that says so. */
export async function makeFolder(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : (err as Error).message;
    throw new GocorError('ERR_GOCOR_IO', `cannot create the output folder ${dir}: ${why}`, { cause: err });
  }
}

/** Whether a process with this pid exists (one of another user counts: signalling it is merely refused). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the temporary files that a killed gocor left in `dir`: only names of gocor's own pattern,
 * and only when their writer is gone. One with this process's pid may be a write in flight here, so
 * it stays. Everything else (a user's `.draft.tmp`) is never touched. Returns how many were removed.
 */
export async function removeStaleTemps(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    const pid = tempWriter(name);
    if (pid === undefined || pid === process.pid || processAlive(pid)) continue;
    await unlink(path.join(dir, name)).then(
      () => removed++,
      () => undefined,
    );
  }
  return removed;
}
