/**
 * Atomic output for the CLI: every file appears under its final name complete or not at all
 * (temporary file in the same folder, fsync, rename), so an interrupted batch never leaves a
 * half-written file that looks finished. Temporary names start with '.' and end in '.tmp'.
 */
import { randomBytes } from 'node:crypto';
import { readdir, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../atomic';
import { GocorError } from '../errors';

export { writeFileAtomic };

const TEMP_NAME = /^\..+\.tmp$/;

/** A temporary path beside `target` (same folder, so the final rename stays on one file system). */
export function tempPathFor(target: string): string {
  return path.join(
    path.dirname(target),
    `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
}

/**
 * For writers that insist on a path (e.g. `writeFlo`, `writeNpy`): `write` fills a temporary path,
 * which is then renamed onto `target`. On failure the temporary file is removed.
 */
export async function writeAtomicWith(
  target: string,
  write: (tmpPath: string) => Promise<unknown> | unknown,
): Promise<void> {
  const tmp = tempPathFor(target);
  try {
    await write(tmp);
    await rename(tmp, target);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    if (err instanceof GocorError) throw err;
    throw new GocorError('ERR_GOCOR_IO', `cannot write ${target}: ${(err as Error).message}`, { cause: err });
  }
}

/** JSON with a trailing newline, atomically. */
export function writeJsonAtomic(target: string, value: unknown): Promise<void> {
  return writeFileAtomic(target, `${JSON.stringify(value, null, 2)}\n`);
}

/** Removes temporary files that a killed run left in `dir` (never anything else). Returns how many. */
export async function removeStaleTemps(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    if (TEMP_NAME.test(name)) {
      await unlink(path.join(dir, name)).then(
        () => removed++,
        () => undefined,
      );
    }
  }
  return removed;
}
