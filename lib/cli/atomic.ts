/**
 * Atomic output for the CLI: every file appears under its final name complete or not at all
 * (temporary file in the same folder, fsync, rename), so an interrupted batch never leaves a
 * half-written file that looks finished. Temporary names start with '.' and end in '.tmp'.
 */
import { readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../atomic';

export { writeFileAtomic };

const TEMP_NAME = /^\..+\.tmp$/;

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
