/**
 * An independent PyTorch checkpoint writer for the tests (torch.save's two layouts, byte by byte, not
 * with gocor's own code): zip (torch >= 1.6) and legacy, optionally inside {'state_dict': ...}.
 * Used by test/pth.test.ts and test/networks.test.ts.
 */
import zlib from 'node:zlib';

export interface Spec {
  name: string;
  storage: string; // torch storage type, e.g. 'FloatStorage'
  key: string;
  bytes: Uint8Array; // the storage's raw little-endian bytes
  numel: number;
  offset: number;
  shape: number[];
  stride: number[];
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};
const str = (s: string) => Buffer.concat([Buffer.from('X'), u32(Buffer.byteLength(s)), Buffer.from(s)]);
const int = (n: number) => Buffer.concat([Buffer.from('J'), u32(n)]);
export const glob = (mod: string, name: string) => Buffer.from(`c${mod}\n${name}\n`);
const ints = (xs: number[]) => Buffer.concat([Buffer.from('('), ...xs.map(int), Buffer.from('t')]);
export const PROTO2 = Buffer.from([0x80, 2]);

/** The pickle torch.save writes for a state dict (optionally inside {'state_dict': ..., 'epoch': 3}). */
export function statePickle(
  specs: Spec[],
  opts: { legacy?: boolean; wrap?: boolean; dictGlobal?: [string, string] } = {},
) {
  const [dm, dn] = opts.dictGlobal ?? ['collections', 'OrderedDict'];
  const items = specs.map((s) =>
    Buffer.concat([
      str(s.name),
      glob('torch._utils', '_rebuild_tensor_v2'),
      Buffer.from('(('),
      str('storage'),
      glob('torch', s.storage),
      str(s.key),
      str('cpu'),
      int(s.numel),
      opts.legacy ? Buffer.from('N') : Buffer.alloc(0),
      Buffer.from('tQ'),
      int(s.offset),
      ints(s.shape),
      ints(s.stride),
      Buffer.from([0x89]),
      glob('collections', 'OrderedDict'),
      Buffer.from(')Rt'),
      Buffer.from('R'),
    ]),
  );
  const dict = Buffer.concat([glob(dm, dn), Buffer.from(')R('), ...items, Buffer.from('u')]);
  const body = opts.wrap
    ? Buffer.concat([Buffer.from('}('), str('state_dict'), dict, str('epoch'), int(3), Buffer.from('u')])
    : dict;
  return Buffer.concat([PROTO2, body, Buffer.from('.')]);
}

/** A zip archive of stored (or deflated) entries, as torch's zip writer lays it out. */
export function zip(entries: Array<[string, Uint8Array]>, deflate = new Set<string>()): Buffer {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const packed = deflate.has(name) ? zlib.deflateRawSync(data) : Buffer.from(data);
    const n = Buffer.from(name);
    // The fields local header and central directory share: method, CRC, sizes, name length.
    const common = (b: Buffer, at: number) => {
      b.writeUInt16LE(deflate.has(name) ? 8 : 0, at);
      b.writeUInt32LE(zlib.crc32(data), at + 6);
      b.writeUInt32LE(packed.length, at + 10);
      b.writeUInt32LE(data.length, at + 14);
      b.writeUInt16LE(n.length, at + 18);
      return b;
    };
    const head = common(Buffer.alloc(30), 8);
    head.writeUInt32LE(0x04034b50, 0);
    const cd = common(Buffer.alloc(46), 10);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt32LE(offset, 42);
    locals.push(head, n, packed);
    central.push(cd, n);
    offset += 30 + n.length + packed.length;
  }
  const cdBytes = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cdBytes.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cdBytes, end]);
}

export function zipCheckpoint(
  specs: Spec[],
  opts: { wrap?: boolean; deflate?: boolean; dictGlobal?: [string, string] } = {},
) {
  const storages = new Map(specs.map((s) => [s.key, s.bytes]));
  const entries: Array<[string, Uint8Array]> = [
    ['ckpt/data.pkl', statePickle(specs, opts)],
    ['ckpt/byteorder', Buffer.from('little')],
    ...[...storages].map(([k, b]): [string, Uint8Array] => [`ckpt/data/${k}`, b]),
    ['ckpt/version', Buffer.from('3\n')],
  ];
  return zip(entries, opts.deflate ? new Set(entries.map(([n]) => n)) : undefined);
}

export function legacyCheckpoint(specs: Spec[], opts: { wrap?: boolean; dictGlobal?: [string, string] } = {}) {
  const storages = new Map(specs.map((s) => [s.key, s]));
  const magic = Buffer.alloc(10);
  let m = 0x1950a86a20f9469cfc6cn;
  for (let i = 0; i < 10; i++, m >>= 8n) magic[i] = Number(m & 0xffn);
  const parts = [
    Buffer.concat([PROTO2, Buffer.from([0x8a, 10]), magic, Buffer.from('.')]),
    Buffer.concat([PROTO2, int(1001), Buffer.from('.')]),
    Buffer.concat([PROTO2, Buffer.from('}('), str('little_endian'), Buffer.from([0x88]), Buffer.from('u.')]),
    statePickle(specs, { ...opts, legacy: true }),
    Buffer.concat([PROTO2, Buffer.from(']('), ...[...storages.keys()].map(str), Buffer.from('e.')]),
  ];
  for (const s of storages.values()) {
    const n = Buffer.alloc(8);
    n.writeBigInt64LE(BigInt(s.numel));
    parts.push(n, Buffer.from(s.bytes));
  }
  return Buffer.concat(parts);
}

export const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
export const f32 = (name: string, key: string, values: number[], view: Partial<Spec> = {}): Spec => ({
  name,
  storage: 'FloatStorage',
  key,
  bytes: bytesOf(Float32Array.from(values)),
  numel: values.length,
  offset: 0,
  shape: [values.length],
  stride: [1],
  ...view,
});
