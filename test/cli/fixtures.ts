/**
 * Fixtures and independent readers for the CLI tests: a procedural texture cropped into pairs with a
 * known integer shift, Middlebury .flo and .npy written and read here (not with gocor's own code),
 * and a helper that runs the real CLI as a child process.
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll } from 'vitest';

export const ROOT = path.resolve(__dirname, '..', '..');
/** The built CLI (npm run build:ts); GOCOR_CLI_DIST points elsewhere for a private build. */
export const CLI = path.join(ROOT, process.env.GOCOR_CLI_DIST ?? 'dist', 'cli.js');

export function cliBuilt(): boolean {
  return existsSync(CLI);
}

/** A new folder in the OS temporary directory, removed after the calling test file's tests. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Starts `command` and collects its output; `done` resolves when it has exited. */
export function start(
  command: string,
  args: string[],
  opts: SpawnOptions = {},
): { child: ChildProcess; done: Promise<CliRun> } {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  const done = new Promise<CliRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, done };
}

/** Runs the real CLI (`node dist/cli.js ...`) to completion. */
export function runCli(args: string[], opts: SpawnOptions = {}): Promise<CliRun> {
  return start(process.execPath, [CLI, ...args], opts).done;
}

/** Smooth, non-repetitive gray texture (sum of random blobs), W x H, values 0..255; deterministic. */
export function texture(W: number, H: number, seed: number): Uint8Array {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  const img = new Float64Array(W * H);
  for (let k = 0; k < 300; k++) {
    const cx = rnd() * W;
    const cy = rnd() * H;
    const r = 2 + rnd() * 10;
    const a = rnd() * 2 - 1;
    const x0 = Math.max(0, Math.floor(cx - 3 * r));
    const x1 = Math.min(W - 1, Math.ceil(cx + 3 * r));
    const y0 = Math.max(0, Math.floor(cy - 3 * r));
    const y1 = Math.min(H - 1, Math.ceil(cy + 3 * r));
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const i = y * W + x;
        img[i] = (img[i] as number) + a * Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r));
      }
    }
  }
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const v of img) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return Uint8Array.from(img, (v) => Math.round((255 * (v - lo)) / (hi - lo)));
}

/**
 * Crops a = T[oy.., ox..] and b = T[oy+dy.., ox+dx..] (size S) out of texture T and writes them as PNG.
 * Then a(p) = T(p + o) = b(p - d): the true flow is (-dx, -dy) everywhere.
 */
export async function writeShiftedPair(
  tex: Uint8Array,
  texW: number,
  S: number,
  d: { dx: number; dy: number },
  aPath: string,
  bPath: string,
): Promise<void> {
  const crop = (ox: number, oy: number) => {
    const out = Buffer.alloc(S * S);
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) out[y * S + x] = tex[(oy + y) * texW + ox + x] as number;
    return sharp(out, { raw: { width: S, height: S, channels: 1 } })
      .toColourspace('b-w')
      .png();
  };
  const o = 20;
  await crop(o, o).toFile(aPath);
  await crop(o + d.dx, o + d.dy).toFile(bPath);
}

/** Middlebury .flo: 'PIEH', int32 width, int32 height, then (u, v) float32 pairs row by row. */
export function writeFloFile(
  file: string,
  W: number,
  H: number,
  u: (x: number, y: number) => number,
  v: (x: number, y: number) => number,
): void {
  const b = Buffer.alloc(12 + 8 * W * H);
  b.write('PIEH', 0, 'latin1');
  b.writeInt32LE(W, 4);
  b.writeInt32LE(H, 8);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      b.writeFloatLE(u(x, y), 12 + 8 * (y * W + x));
      b.writeFloatLE(v(x, y), 16 + 8 * (y * W + x));
    }
  }
  writeFileSync(file, b);
}

export function readFloFile(file: string): { W: number; H: number; u: Float64Array; v: Float64Array } {
  const b = readFileSync(file);
  if (b.toString('latin1', 0, 4) !== 'PIEH') throw new Error(`${file}: not a .flo file`);
  const W = b.readInt32LE(4);
  const H = b.readInt32LE(8);
  if (b.length !== 12 + 8 * W * H) throw new Error(`${file}: ${b.length} bytes for ${W}x${H}`);
  const u = new Float64Array(W * H);
  const v = new Float64Array(W * H);
  for (let p = 0; p < W * H; p++) {
    u[p] = b.readFloatLE(12 + 8 * p);
    v[p] = b.readFloatLE(16 + 8 * p);
  }
  return { W, H, u, v };
}

/** .npy version 1.0, little-endian float32, C order. */
export function writeNpyFile(file: string, shape: number[], data: Float32Array): void {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64);
  header += '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  writeFileSync(
    file,
    Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]),
  );
}

export function readNpyFile(file: string): { shape: number[]; data: Float32Array } {
  const b = readFileSync(file);
  if (b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not .npy`);
  const major = b[6] as number;
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = b.toString('latin1', start, start + hlen);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header))
    throw new Error(`${file}: not C-order float32: ${header}`);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const body = b.subarray(start + hlen);
  const data = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
  if (data.length !== shape.reduce((a, c) => a * c, 1))
    throw new Error(`${file}: ${data.length} values for shape ${shape}`);
  return { shape, data };
}

/**
 * Writes `<dir>/<name>`, a pair list of n pairs cycling over `data/p1a.png,data/p1b.png` ...
 * `data/p3a.png,data/p3b.png` (pair i writes to `<i>-p<k>a`); returns its path.
 */
export function writePairList(dir: string, n: number, name: string): string {
  const lines = ['a,b'];
  for (let k = 0; k < n; k++) lines.push(`data/p${(k % 3) + 1}a.png,data/p${(k % 3) + 1}b.png`);
  writeFileSync(path.join(dir, name), `${lines.join('\n')}\n`);
  return path.join(dir, name);
}

/** The lines of a results.jsonl, each parsed; a last line without its newline (a torn write) throws. */
export function readJsonl(file: string): Record<string, unknown>[] {
  const text = readFileSync(file, 'utf8');
  if (text === '') return [];
  if (!text.endsWith('\n')) throw new Error(`${file} does not end with a newline: a torn write`);
  return text
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Decodes an image fully (throws if it does not decode) and returns its size and stored channel count. */
export async function imageInfo(file: string): Promise<{ width: number; height: number; channels: number }> {
  const { info } = await sharp(file, { failOn: 'error' }).raw().toBuffer({ resolveWithObject: true });
  const meta = await sharp(file).metadata();
  return { width: info.width, height: info.height, channels: meta.channels as number };
}
