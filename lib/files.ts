/**
 * Reading whole input files (.npy, .flo, parameters, ground truth) with bounds. A path must name a
 * regular file once its symlinks are resolved: opening a FIFO blocks until a writer comes (forever,
 * in a thread of the pool), and a link to /dev/zero never ends. The size must be within the memory
 * limit, and where a header says how long the file is, the file must be exactly that long before
 * its body is read.
 */
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { GocorError } from './errors';
import { checkMemory } from './exec';

function kind(st: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean }) {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  return 'not a regular file';
}

/** Opens `file` for reading if it is a regular file (after symlinks); `what` names it in errors. */
export async function openRegularFile(file: string, what: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    // O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer; the
    // type is then checked on the open descriptor, so nothing can be swapped in between.
    fh = await open(file, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new GocorError('ERR_GOCOR_IO', `cannot read ${what} ${file}: ${e.code ?? e.message}`, { cause: err });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new GocorError('ERR_GOCOR_IO', `cannot read ${what} ${file}: it is ${kind(st)}`);
    checkMemory(st.size, `reading ${what} ${file}`, 'use a smaller file');
    return { fh, size: st.size };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** Exactly `into.length` bytes of `fh` from `position` into `into`; a file that ended early is ERR_GOCOR_IO. */
export async function readExactly(fh: FileHandle, into: Uint8Array, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw new GocorError('ERR_GOCOR_IO', `${file} ended early (it changed while being read)`);
    done += bytesRead;
  }
}

/**
 * The whole of a regular file. With `impliedSize`, the first `headBytes` bytes are read first and
 * `impliedSize(head)` says how long the header makes the file (undefined: no opinion, the parser
 * will explain); a file of another length is refused before its body is read.
 */
export async function readRegularFile(
  file: string,
  what: string,
  impliedSize?: (head: Buffer) => number | undefined,
  headBytes = 0,
): Promise<Buffer> {
  const { fh, size } = await openRegularFile(file, what);
  try {
    if (impliedSize && headBytes > 0) {
      const head = Buffer.alloc(Math.min(headBytes, size));
      await readExactly(fh, head, 0, file);
      const n = impliedSize(head);
      if (n !== undefined && n !== size) {
        throw new GocorError(
          'ERR_GOCOR_IO',
          `${what} ${file}: its header implies ${n} bytes but the file holds ${size}`,
        );
      }
    }
    const buf = Buffer.alloc(size);
    await readExactly(fh, buf, 0, file);
    return buf;
  } finally {
    await fh.close();
  }
}
