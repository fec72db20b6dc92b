/** Atomic file writes: a temporary file in the same folder, fsync, then rename over the target. */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { GocorError } from './errors';

export async function writeFileAtomic(target: string, data: Uint8Array | string): Promise<void> {
  const tmp = path.join(
    path.dirname(target),
    `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new GocorError('ERR_GOCOR_IO', `cannot write ${target}: ${(err as Error).message}`, { cause: err });
  }
}
