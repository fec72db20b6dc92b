/**
 * PyTorch checkpoint reader (`torch.save` files: `.pth`, `.pth.tar`, `.pt`), without Python and
 * without executing anything. Both formats are read:
 *  - zip (torch >= 1.6): `<archive>/data.pkl` (the pickled object) and `<archive>/data/<key>` (one
 *    raw storage per key), most entries stored, deflated ones inflated with zlib;
 *  - legacy: five pickles in a row (magic number, protocol version, system info, the object, the
 *    storage keys), then each storage as an int64 element count followed by its raw bytes.
 * The pickles are *interpreted*, not unpickled: only the opcodes a state dict uses are known, a
 * global is only ever one of a short whitelist (OrderedDict, torch's tensor rebuild functions and
 * storage types) and is never called; anything else is ERR_GOCOR_PARAMS naming the opcode.
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { GocorError } from './errors';
import { checkMemory } from './exec';
import { readRegularFile } from './files';

/** Element types of checkpoint tensors (torch dtype names). */
export type CheckpointDtype =
  | 'float32'
  | 'float64'
  | 'float16'
  | 'bfloat16'
  | 'int64'
  | 'int32'
  | 'int16'
  | 'int8'
  | 'uint8'
  | 'bool';

/**
 * One tensor of a checkpoint, contiguous (row-major) whatever its strides were in the file.
 * float16 and bfloat16 values are widened to float32; bool is 0/1 in a Uint8Array.
 */
export interface CheckpointTensor {
  dtype: CheckpointDtype;
  shape: number[];
  data: Float32Array | Float64Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;
}

const STORAGE_DTYPES: Record<string, { dtype: CheckpointDtype; width: number }> = {
  FloatStorage: { dtype: 'float32', width: 4 },
  DoubleStorage: { dtype: 'float64', width: 8 },
  HalfStorage: { dtype: 'float16', width: 2 },
  BFloat16Storage: { dtype: 'bfloat16', width: 2 },
  LongStorage: { dtype: 'int64', width: 8 },
  IntStorage: { dtype: 'int32', width: 4 },
  ShortStorage: { dtype: 'int16', width: 2 },
  CharStorage: { dtype: 'int8', width: 1 },
  ByteStorage: { dtype: 'uint8', width: 1 },
  BoolStorage: { dtype: 'bool', width: 1 },
};

const CALLABLES = [
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
];
const ALLOWED_GLOBALS = new Set([...CALLABLES, ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`)]);

function ckptError(message: string, cause?: unknown): GocorError {
  return new GocorError('ERR_GOCOR_PARAMS', `checkpoint: ${message}`, cause === undefined ? undefined : { cause });
}

// ---- values of the pickle interpreter -----------------------------------------------------------

class Global {
  constructor(readonly name: string) {}
}

/** A storage named by BINPERSID: `key` in the archive; the tensor may use `length` elements from element `base`. */
class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: CheckpointDtype,
    readonly width: number,
    readonly numel: number,
    readonly base: number,
    readonly length: number,
  ) {}
}

class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

type Value = unknown;

function isCount(v: Value): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function counts(v: Value, what: string): number[] {
  if (!Array.isArray(v) || !v.every(isCount)) throw ckptError(`tensor ${what} ${describe(v)} is not a tuple of sizes`);
  return v as number[];
}

/** A value for a message: short, and finite even for a list that holds itself. */
function describe(v: Value, depth = 0): string {
  if (v instanceof Global) return v.name;
  if (v instanceof Map) return 'a dict';
  if (Array.isArray(v)) {
    if (depth >= 2) return '(…)';
    const items = v.slice(0, 6).map((x) => describe(x, depth + 1));
    return `(${items.join(', ')}${v.length > 6 ? `, … ${v.length} items` : ''})`;
  }
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === null) return 'None';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'an object';
  return String(v);
}

/** The persistent id of a storage: zip `('storage', type, key, location, numel)`; legacy adds view metadata. */
function storageFromPid(pid: Value): StorageRef {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5 || pid.length > 6)
    throw ckptError(`persistent id ${describe(pid)} is not a storage`);
  const [, type, key, , numel, view] = pid;
  const info = type instanceof Global ? STORAGE_DTYPES[type.name.replace(/^torch\./, '')] : undefined;
  if (!info) throw ckptError(`storage type ${describe(type)} is not supported`);
  if (typeof key !== 'string' || !isCount(numel)) throw ckptError(`storage ${describe(pid)} is malformed`);
  if (view === undefined || view === null) return new StorageRef(key, info.dtype, info.width, numel, 0, numel);
  // Legacy views: (view key, element offset into the root storage, view size).
  if (!Array.isArray(view) || view.length !== 3 || !isCount(view[1]) || !isCount(view[2]) || view[1] + view[2] > numel)
    throw ckptError(`storage view ${describe(view)} of storage ${key} is malformed`);
  return new StorageRef(key, info.dtype, info.width, numel, view[1], view[2]);
}

/** What REDUCE builds from a whitelisted callable; nothing is executed. */
function reduce(fn: Value, args: Value): Value {
  const name = fn instanceof Global ? fn.name : describe(fn);
  if (!Array.isArray(args)) throw ckptError(`REDUCE on ${name} with arguments ${describe(args)}`);
  switch (name) {
    case 'collections.OrderedDict':
      if (args.length !== 0) throw ckptError('REDUCE on collections.OrderedDict with arguments');
      return new Map();
    case 'torch._utils._rebuild_tensor':
    case 'torch._utils._rebuild_tensor_v2': {
      const [storage, offset, size, stride] = args;
      if (!(storage instanceof StorageRef) || !isCount(offset))
        throw ckptError(`${name} with arguments ${describe(args)}`);
      const shape = counts(size, 'size');
      const strides = counts(stride, 'stride');
      if (strides.length !== shape.length)
        throw ckptError(`tensor size ${describe(size)} and stride ${describe(stride)} differ in length`);
      return new TensorRef(storage, offset, shape, strides);
    }
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      if (!(args[0] instanceof TensorRef)) throw ckptError(`${name} with arguments ${describe(args)}`);
      return args[0];
    default:
      throw ckptError(`REDUCE on ${name} is not allowed`);
  }
}

const OPCODE_NAMES: Record<number, string> = {
  128: 'PROTO',
  149: 'FRAME',
  125: 'EMPTY_DICT',
  93: 'EMPTY_LIST',
  41: 'EMPTY_TUPLE',
  40: 'MARK',
  88: 'BINUNICODE',
  140: 'SHORT_BINUNICODE',
  141: 'BINUNICODE8',
  67: 'SHORT_BINBYTES',
  66: 'BINBYTES',
  74: 'BININT',
  75: 'BININT1',
  77: 'BININT2',
  138: 'LONG1',
  71: 'BINFLOAT',
  99: 'GLOBAL',
  147: 'STACK_GLOBAL',
  81: 'BINPERSID',
  82: 'REDUCE',
  98: 'BUILD',
  115: 'SETITEM',
  117: 'SETITEMS',
  97: 'APPEND',
  101: 'APPENDS',
  116: 'TUPLE',
  133: 'TUPLE1',
  134: 'TUPLE2',
  135: 'TUPLE3',
  78: 'NONE',
  136: 'NEWTRUE',
  137: 'NEWFALSE',
  104: 'BINGET',
  106: 'LONG_BINGET',
  113: 'BINPUT',
  114: 'LONG_BINPUT',
  148: 'MEMOIZE',
  46: 'STOP',
};

/** Python's own names for the opcodes a state dict never uses, so that a refusal names them. */
const FOREIGN_OPCODES: Record<string, string> = {
  i: 'INST',
  o: 'OBJ',
  '\x81': 'NEWOBJ',
  '\x92': 'NEWOBJ_EX',
  P: 'PERSID',
  I: 'INT',
  L: 'LONG',
  F: 'FLOAT',
  S: 'STRING',
  V: 'UNICODE',
  U: 'SHORT_BINSTRING',
  T: 'BINSTRING',
  d: 'DICT',
  l: 'LIST',
  g: 'GET',
  p: 'PUT',
  '0': 'POP',
  '1': 'POP_MARK',
  '2': 'DUP',
  '\x82': 'EXT1',
  '\x83': 'EXT2',
  '\x84': 'EXT4',
  '\x8b': 'LONG4',
  '\x8f': 'EMPTY_SET',
  '\x90': 'ADDITEMS',
  '\x91': 'FROZENSET',
  '\x96': 'BYTEARRAY8',
  '\x97': 'NEXT_BUFFER',
  '\x98': 'READONLY_BUFFER',
};

/**
 * Interprets one pickle of `buf` from `start`; returns its value and the position after STOP.
 * `persistentLoad` turns a BINPERSID id into a value.
 */
function interpret(
  buf: Uint8Array,
  start: number,
  what: string,
  persistentLoad: (pid: Value) => Value = (pid) => {
    throw ckptError(`${what}: unexpected persistent id ${describe(pid)}`);
  },
): { value: Value; end: number } {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const stack: Value[] = [];
  const marks: number[] = [];
  const memo = new Map<number, Value>();
  let pos = start;
  let opPos = start;
  let opName = '';
  const fail = (message: string): never => {
    throw ckptError(`${what}: ${opName} at byte ${opPos}: ${message}`);
  };
  const need = (n: number) => {
    if (pos + n > buf.length) fail(`the pickle ends early (${n} bytes needed, ${buf.length - pos} left)`);
  };
  const u8 = () => {
    need(1);
    return buf[pos++] as number;
  };
  const u16 = () => {
    need(2);
    pos += 2;
    return dv.getUint16(pos - 2, true);
  };
  const u32 = () => {
    need(4);
    pos += 4;
    return dv.getUint32(pos - 4, true);
  };
  const u64 = () => {
    need(8);
    pos += 8;
    const v = dv.getBigUint64(pos - 8, true);
    if (v > BigInt(buf.length)) fail(`length ${v} exceeds the file`);
    return Number(v);
  };
  const bytes = (n: number) => {
    need(n);
    pos += n;
    return buf.subarray(pos - n, pos);
  };
  const text = (n: number) => Buffer.from(bytes(n)).toString('utf8');
  const line = () => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) fail('the pickle ends inside a line');
    const s = Buffer.from(buf.subarray(pos, end)).toString('utf8');
    pos = end + 1;
    return s;
  };
  const pop = (): Value => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= (marks.at(-1) as number)))
      fail('the stack is empty');
    return stack.pop();
  };
  const top = (): Value => {
    if (stack.length === 0) fail('the stack is empty');
    return stack[stack.length - 1];
  };
  const popMark = (): Value[] => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK');
    return stack.splice(m as number);
  };
  const global = (name: string): Global => {
    if (!ALLOWED_GLOBALS.has(name))
      fail(`global ${name} is not allowed (a checkpoint reader only knows ${[...ALLOWED_GLOBALS].join(', ')})`);
    return new Global(name);
  };
  const setItems = (dict: Value, items: Value[]) => {
    if (!(dict instanceof Map)) fail(`target is ${describe(dict)}, not a dict`);
    if (items.length % 2 !== 0) fail('odd number of items');
    for (let i = 0; i < items.length; i += 2) (dict as Map<Value, Value>).set(items[i], items[i + 1]);
  };
  const append = (list: Value, items: Value[]) => {
    if (!Array.isArray(list)) fail(`target is ${describe(list)}, not a list`);
    (list as Value[]).push(...items);
  };

  for (;;) {
    opPos = pos;
    const op = u8();
    opName = OPCODE_NAMES[op] ?? '';
    if (!opName) {
      const name = FOREIGN_OPCODES[String.fromCharCode(op)] ?? `0x${op.toString(16).padStart(2, '0')}`;
      throw ckptError(`${what}: pickle opcode ${name} at byte ${opPos} is not allowed in a checkpoint reader`);
    }
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail('unknown protocol');
        break;
      case 0x95: // FRAME: a length prefix only
        u64();
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x58: // BINUNICODE
        stack.push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(text(u64()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(Uint8Array.from(bytes(u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(Uint8Array.from(bytes(u32())));
        break;
      case 0x4a: // BININT
        need(4);
        pos += 4;
        stack.push(dv.getInt32(pos - 4, true));
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: {
        // LONG1: little-endian two's complement of n bytes
        const b = bytes(u8());
        let v = 0n;
        for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i] as number);
        if (b.length > 0 && (b[b.length - 1] as number) & 0x80) v -= 1n << BigInt(8 * b.length);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        pos += 8;
        stack.push(dv.getFloat64(pos - 8, false));
        break;
      case 0x63: {
        // GLOBAL module\nname\n
        const mod = line();
        stack.push(global(`${mod}.${line()}`));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const mod = pop();
        if (typeof mod !== 'string' || typeof name !== 'string') fail('module and name must be strings');
        stack.push(global(`${mod}.${name}`));
        break;
      }
      case 0x51: // BINPERSID
        stack.push(persistentLoad(pop()));
        break;
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        stack.push(reduce(fn, args));
        break;
      }
      case 0x62: {
        // BUILD: the state of a dict (a state dict's _metadata) or of a parameter is not needed
        const state = pop();
        const obj = top();
        if (!(obj instanceof Map || obj instanceof TensorRef) || !(state === null || state instanceof Map))
          fail(`cannot set state ${describe(state)} on ${describe(obj)}`);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x74: // TUPLE
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`memo ${i} is empty`);
        stack.push(memo.get(i));
        break;
      }
      case 0x71: // BINPUT
      case 0x72: // LONG_BINPUT
        memo.set(op === 0x71 ? u8() : u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length !== 0) fail(`${stack.length} values left on the stack`);
        return { value: stack[0], end: pos };
    }
  }
}

// ---- zip ----------------------------------------------------------------------------------------

interface ZipEntry {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

const inflateRaw = promisify(zlib.inflateRaw) as (buf: Uint8Array, opts: zlib.ZlibOptions) => Promise<Buffer>;

function le(buf: Uint8Array) {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** The central directory of a zip archive (zip64 included). */
function zipEntries(buf: Uint8Array): Map<string, ZipEntry> {
  const dv = le(buf);
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 0xffff); i--) {
    if (dv.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw ckptError('zip archive has no end of central directory (truncated file?)');
  let count = dv.getUint16(eocd + 10, true);
  let cdSize = dv.getUint32(eocd + 12, true);
  let cdOffset = dv.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || dv.getUint32(loc, true) !== 0x07064b50)
      throw ckptError('zip64 end of central directory locator missing');
    const z = Number(dv.getBigUint64(loc + 8, true));
    if (z + 56 > buf.length || dv.getUint32(z, true) !== 0x06064b50)
      throw ckptError('zip64 end of central directory missing');
    count = Number(dv.getBigUint64(z + 32, true));
    cdSize = Number(dv.getBigUint64(z + 40, true));
    cdOffset = Number(dv.getBigUint64(z + 48, true));
  }
  if (cdOffset + cdSize > buf.length) throw ckptError('zip central directory lies outside the file (truncated file?)');
  const entries = new Map<string, ZipEntry>();
  let p = cdOffset;
  for (let n = 0; n < count; n++) {
    if (p + 46 > buf.length || dv.getUint32(p, true) !== 0x02014b50)
      throw ckptError(`zip central directory entry ${n} is corrupt`);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    if (p + 46 + nameLen + extraLen > buf.length) throw ckptError(`zip central directory entry ${n} is corrupt`);
    const e: ZipEntry = {
      name: Buffer.from(buf.subarray(p + 46, p + 46 + nameLen)).toString('utf8'),
      method: dv.getUint16(p + 10, true),
      crc: dv.getUint32(p + 16, true),
      compressedSize: dv.getUint32(p + 20, true),
      size: dv.getUint32(p + 24, true),
      localOffset: dv.getUint32(p + 42, true),
    };
    // zip64 extra field: the 64-bit values of the fields that hold 0xffffffff, in this order.
    for (let x = p + 46 + nameLen; x + 4 <= p + 46 + nameLen + extraLen; ) {
      const id = dv.getUint16(x, true);
      const len = dv.getUint16(x + 2, true);
      if (id === 0x0001) {
        let q = x + 4;
        for (const f of ['size', 'compressedSize', 'localOffset'] as const) {
          if (e[f] === 0xffffffff && q + 8 <= x + 4 + len) {
            e[f] = Number(dv.getBigUint64(q, true));
            q += 8;
          }
        }
      }
      x += 4 + len;
    }
    entries.set(e.name, e);
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

let crcTable: Int32Array | undefined;
function crc32(data: Uint8Array): number {
  const native = (zlib as { crc32?: (d: Uint8Array) => number }).crc32;
  if (native) return native(data);
  if (!crcTable) {
    crcTable = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c;
    }
  }
  let c = -1;
  for (let i = 0; i < data.length; i++) c = (crcTable[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** The bytes of one zip entry, inflated if deflated, CRC-checked. */
async function zipRead(buf: Uint8Array, e: ZipEntry): Promise<Uint8Array> {
  const dv = le(buf);
  if (e.localOffset + 30 > buf.length || dv.getUint32(e.localOffset, true) !== 0x04034b50)
    throw ckptError(`zip entry ${e.name}: local header missing (corrupt or truncated file)`);
  const start = e.localOffset + 30 + dv.getUint16(e.localOffset + 26, true) + dv.getUint16(e.localOffset + 28, true);
  if (start + e.compressedSize > buf.length)
    throw ckptError(`zip entry ${e.name} lies outside the file (truncated file?)`);
  const raw = buf.subarray(start, start + e.compressedSize);
  let data: Uint8Array;
  checkMemory(e.size, `checkpoint entry ${e.name}`, 'use a smaller checkpoint');
  if (e.method === 0) data = raw;
  else if (e.method === 8) {
    try {
      data = await inflateRaw(raw, { maxOutputLength: Math.max(1, e.size) });
    } catch (err) {
      throw ckptError(`zip entry ${e.name} does not inflate (${(err as Error).message})`, err);
    }
  } else throw ckptError(`zip entry ${e.name} uses compression method ${e.method}; only stored and deflated are read`);
  if (data.length !== e.size)
    throw ckptError(`zip entry ${e.name} holds ${data.length} bytes, its header says ${e.size}`);
  if (crc32(data) !== e.crc) throw ckptError(`zip entry ${e.name} fails its CRC check (corrupt file)`);
  return data;
}

// ---- the two formats ----------------------------------------------------------------------------

/** A parsed checkpoint: the unpickled object, and the raw bytes of a storage by key. */
interface Parsed {
  root: Value;
  storage(ref: StorageRef): Promise<Uint8Array>;
}

function collectStorages(): { refs: Map<string, StorageRef>; load: (pid: Value) => StorageRef } {
  const refs = new Map<string, StorageRef>();
  return {
    refs,
    load: (pid) => {
      const s = storageFromPid(pid);
      const seen = refs.get(s.key);
      if (seen && (seen.dtype !== s.dtype || seen.numel !== s.numel))
        throw ckptError(`storage ${s.key} is named with two types or sizes`);
      refs.set(s.key, s);
      return s;
    },
  };
}

function checkStorageBytes(ref: StorageRef, bytes: Uint8Array): Uint8Array {
  if (bytes.length !== ref.numel * ref.width)
    throw ckptError(
      `storage ${ref.key} holds ${bytes.length} bytes, expected ${ref.numel} ${ref.dtype} elements (${ref.numel * ref.width} bytes)`,
    );
  return bytes;
}

async function parseZip(buf: Uint8Array): Promise<Parsed> {
  const entries = zipEntries(buf);
  const pkl = [...entries.keys()].find((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (!pkl) throw ckptError('zip archive has no <archive>/data.pkl (not a torch.save file)');
  const prefix = pkl.slice(0, -'data.pkl'.length);
  const order = entries.get(`${prefix}byteorder`);
  if (order) {
    const o = Buffer.from(await zipRead(buf, order)).toString('latin1');
    if (o !== 'little') throw ckptError(`byte order ${JSON.stringify(o)} is not supported (little-endian only)`);
  }
  const { load } = collectStorages();
  const { value, end } = interpret(await zipRead(buf, entries.get(pkl) as ZipEntry), 0, pkl, load);
  if (end !== (entries.get(pkl) as ZipEntry).size) throw ckptError(`${pkl}: bytes after its STOP`);
  return {
    root: value,
    storage: async (ref) => {
      const e = entries.get(`${prefix}data/${ref.key}`);
      if (!e) throw ckptError(`storage ${ref.key} is missing from the archive (${prefix}data/${ref.key})`);
      return checkStorageBytes(ref, await zipRead(buf, e));
    },
  };
}

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

function parseLegacy(buf: Uint8Array): Parsed {
  let pos = 0;
  const next = (what: string, load?: (pid: Value) => Value) => {
    const r = interpret(buf, pos, what, load);
    pos = r.end;
    return r.value;
  };
  if (next('magic number') !== LEGACY_MAGIC) throw ckptError('not a torch.save file (wrong magic number)');
  const protocol = next('protocol version');
  if (protocol !== 1001) throw ckptError(`legacy protocol version ${describe(protocol)} is not supported (1001 only)`);
  const sys = next('system info');
  if (!(sys instanceof Map) || sys.get('little_endian') !== true)
    throw ckptError('the system info does not say little_endian (big-endian checkpoints are not supported)');
  const { refs, load } = collectStorages();
  const root = next('object', load);
  const keys = next('storage keys');
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string'))
    throw ckptError('the storage key list is not a list of strings');
  // Each storage: int64 element count, then its bytes, in the order of the key list.
  const spans = new Map<string, Uint8Array>();
  const dv = le(buf);
  for (const key of keys as string[]) {
    const ref = refs.get(key);
    if (!ref) throw ckptError(`storage ${key} is listed but no tensor uses it`);
    if (pos + 8 > buf.length) throw ckptError(`storage ${key}: the file ends before its size (truncated file?)`);
    const n = dv.getBigInt64(pos, true);
    if (n !== BigInt(ref.numel))
      throw ckptError(`storage ${key} holds ${n} elements, its tensors say ${ref.numel} (corrupt file)`);
    pos += 8;
    const bytes = ref.numel * ref.width;
    if (pos + bytes > buf.length) throw ckptError(`storage ${key}: the file ends inside its data (truncated file?)`);
    spans.set(key, buf.subarray(pos, pos + bytes));
    pos += bytes;
  }
  if (pos !== buf.length) throw ckptError(`${buf.length - pos} bytes after the last storage`);
  return {
    root,
    storage: async (ref) => {
      const s = spans.get(ref.key);
      if (!s) throw ckptError(`storage ${ref.key} is not in the file`);
      return s;
    },
  };
}

function isZip(buf: Uint8Array): boolean {
  return buf.length >= 4 && buf[0] === 0x50 && buf[1] === 0x4b && buf[2] === 0x03 && buf[3] === 0x04;
}

/** A legacy torch.save file starts with a protocol-2 pickle of a LONG1 (its magic number). */
function isLegacy(buf: Uint8Array): boolean {
  return buf.length >= 4 && buf[0] === 0x80 && (buf[1] as number) <= 5 && buf[2] === 0x8a;
}

/** Whether bytes look like a torch.save file (zip or legacy) rather than, say, safetensors. */
export function isCheckpoint(buf: Uint8Array): boolean {
  return isZip(buf) || isLegacy(buf);
}

// ---- tensors ------------------------------------------------------------------------------------

type Data = CheckpointTensor['data'];

const ARRAYS = {
  float32: Float32Array,
  float64: Float64Array,
  int64: BigInt64Array,
  int32: Int32Array,
  int16: Int16Array,
  int8: Int8Array,
  uint8: Uint8Array,
  bool: Uint8Array,
} as const;

/** The storage's elements as a typed array (float16/bfloat16 widened to float32). */
function storageArray(ref: StorageRef, bytes: Uint8Array): Data {
  // A view of the file's bytes where they are aligned (torch aligns zip entries to 64 bytes; the
  // tensors are copied out of it); a copy where not.
  const aligned = bytes.byteOffset % ref.width === 0 ? bytes : new Uint8Array(bytes);
  const [b, at, n] = [aligned.buffer as ArrayBuffer, aligned.byteOffset, aligned.byteLength / ref.width];
  if (ref.dtype !== 'float16' && ref.dtype !== 'bfloat16') return new ARRAYS[ref.dtype](b, at, n);
  const h = new Uint16Array(b, at, n);
  const out = new Float32Array(h.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < h.length; i++) {
    if (ref.dtype === 'bfloat16') bits[i] = (h[i] as number) << 16;
    else out[i] = halfToFloat(h[i] as number);
  }
  return out;
}

/** IEEE half to float (exact). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** Whether strides are those of a row-major array of that shape (size-1 dimensions: any stride). */
function isContiguous(shape: number[], stride: number[]): boolean {
  let expect = 1;
  for (let k = shape.length - 1; k >= 0; k--) {
    if (shape[k] !== 1 && stride[k] !== expect) return false;
    expect *= shape[k] as number;
  }
  return true;
}

/** The tensor's elements in row-major order, gathered through its strides. */
function materialise(name: string, t: TensorRef, src: Data): CheckpointTensor {
  const { shape, stride, offset } = t;
  const n = shape.reduce((a, b) => a * b, 1);
  // A view may repeat elements (stride 0), so its size is bounded by memory, not by its storage.
  checkMemory(n * t.storage.width, `checkpoint tensor ${name} [${shape.join(', ')}]`, 'use a smaller checkpoint');
  const out = new (src.constructor as new (n: number) => Data)(n);
  if (n > 0) {
    const last = offset + shape.reduce((a, d, k) => a + (d - 1) * (stride[k] as number), 0);
    if (last >= t.storage.length)
      throw ckptError(
        `tensor ${name} (size [${shape.join(', ')}], stride [${stride.join(', ')}], offset ${offset}) reaches element ${last} of a storage of ${t.storage.length}`,
      );
    const base = t.storage.base + offset;
    if (isContiguous(shape, stride)) {
      (out as Float32Array).set((src as Float32Array).subarray(base, base + n));
      return { dtype: t.storage.dtype, shape: [...shape], data: out };
    }
    const idx = new Array<number>(shape.length).fill(0);
    let at = base;
    for (let i = 0; i < n; i++) {
      (out as unknown as unknown[])[i] = (src as unknown as unknown[])[at];
      // Odometer over the index, innermost dimension fastest.
      for (let k = shape.length - 1; k >= 0; k--) {
        const kk = idx[k] as number;
        if (kk + 1 < (shape[k] as number)) {
          idx[k] = kk + 1;
          at += stride[k] as number;
          break;
        }
        idx[k] = 0;
        at -= kk * (stride[k] as number);
      }
    }
  }
  return { dtype: t.storage.dtype, shape: [...shape], data: out };
}

/** The tensors of the checkpoint's state dict by name: `{'state_dict': ...}` unwrapped; non-tensor entries skipped. */
function stateDict(root: Value): Map<string, TensorRef> {
  let dict = root;
  if (dict instanceof Map && dict.get('state_dict') instanceof Map) dict = dict.get('state_dict');
  if (!(dict instanceof Map)) throw ckptError(`the checkpoint holds ${describe(dict)}, not a state dict`);
  const out = new Map<string, TensorRef>();
  for (const [k, v] of dict) if (typeof k === 'string' && v instanceof TensorRef) out.set(k, v);
  if (out.size === 0) throw ckptError('the checkpoint holds no tensors (neither a state dict nor {state_dict: ...})');
  return out;
}

async function parse(buf: Uint8Array): Promise<Parsed> {
  if (isZip(buf)) return parseZip(buf);
  if (isLegacy(buf)) return parseLegacy(buf);
  throw ckptError('not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save file)');
}

/**
 * The tensors of a checkpoint's state dict whose names `keep` accepts (all by default), each
 * materialised contiguous. Storages of other tensors are not read.
 */
export async function checkpointTensors(
  buf: Uint8Array,
  keep: (name: string) => boolean = () => true,
): Promise<Record<string, CheckpointTensor>> {
  const parsed = await parse(buf);
  const out: Record<string, CheckpointTensor> = Object.create(null);
  const arrays = new Map<string, Data>();
  for (const [name, t] of stateDict(parsed.root)) {
    if (!keep(name)) continue;
    let src = arrays.get(t.storage.key);
    if (!src) {
      src = storageArray(t.storage, await parsed.storage(t.storage));
      arrays.set(t.storage.key, src);
    }
    out[name] = materialise(name, t, src);
  }
  return out;
}

/**
 * Reads a PyTorch checkpoint (`torch.save` of a state dict or of `{state_dict: ...}`; zip or legacy
 * format) from a path or its bytes, without executing anything. Returns every tensor of the state
 * dict by name, contiguous, in its own dtype (float16/bfloat16 as float32). A file that is not a
 * checkpoint, is corrupt or truncated, or whose pickle asks for anything beyond a state dict
 * (another global, another opcode) rejects with ERR_GOCOR_PARAMS.
 */
export async function readCheckpoint(source: string | Uint8Array): Promise<Record<string, CheckpointTensor>> {
  if (typeof source === 'string') return checkpointTensors(await readRegularFile(source, 'checkpoint'));
  if (source instanceof Uint8Array) return checkpointTensors(source);
  throw new GocorError(
    'ERR_GOCOR_INVALID_ARG',
    `Expected path or Buffer for source but received ${source === null ? 'null' : typeof source}`,
  );
}

/** A checkpoint tensor's values as float32 (what GOCor's parameters are). */
export function toFloat32(t: CheckpointTensor): Float32Array {
  if (t.data instanceof Float32Array) return t.data;
  if (t.data instanceof BigInt64Array) return Float32Array.from(t.data, (v) => Number(v));
  return Float32Array.from(t.data);
}
