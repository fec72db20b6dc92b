/** Atomic file writes: a temporary file in the same folder, fsync, then rename over the target. */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { GocorError } from './errors';

/**
 * gocor's temporary names, `.<target name>.gocor-<pid>-<8 hex>.tmp`: the marker and the writer's pid
 * make them impossible to confuse with a user's own `.something.tmp`, and tell whether the writer is gone.
 */
const TEMP_NAME = /^\..+\.gocor-([1-9]\d{0,9})-[0-9a-f]{8}\.tmp$/;

/** The pid of the process that wrote this gocor temporary file, or undefined for any other name. */
export function tempWriter(name: string): number | undefined {
  const m = TEMP_NAME.exec(name);
  return m ? Number(m[1]) : undefined;
}

export async function writeFileAtomic(target: string, data: Uint8Array | string): Promise<void> {
  const tmp = path.join(
    path.dirname(target),
    `.${path.basename(target)}.gocor-${process.pid}-${randomBytes(4).toString('hex')}.tmp`,
  );
  let created = false;
  try {
    const fh = await open(tmp, 'wx');
    created = true;
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (err) {
    if (created) await unlink(tmp).catch(() => undefined);
    throw new GocorError('ERR_GOCOR_IO', `cannot write ${target}: ${(err as Error).message}`, { cause: err });
  }
}
