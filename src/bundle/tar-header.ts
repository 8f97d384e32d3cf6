/**
 * Tar header encoding, byte for byte what tar-stream 3 writes (ustar, or a PAX extended header
 * followed by the entry header when a name or link does not fit ustar or extra records are
 * needed). The packer writes its own output, instead of going through tar-stream's per-entry
 * writable, to avoid a stream object and several callbacks per file; test/bundle/tar-header.test.ts
 * checks the bytes against tar-stream.
 *
 * @module
 */
import { padToBlock, TAR_BLOCK } from './estimate.js';

/** Entry types the packer writes. */
export type TarEntryType = 'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo';

/** What goes into one entry's header. */
export interface TarHeaderFields {
  name: string;
  type: TarEntryType;
  /** Permission bits (file-type bits are ignored). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Data bytes (regular files only; 0 otherwise). */
  size: number;
  linkname?: string | undefined;
  devmajor?: number | undefined;
  devminor?: number | undefined;
  /** Extra PAX records; when present a PAX header is always written. */
  pax?: Record<string, string> | undefined;
}

const TYPE_FLAGS: Record<TarEntryType | 'pax-header', number> = {
  file: 0,
  link: 1,
  symlink: 2,
  'character-device': 3,
  'block-device': 4,
  directory: 5,
  fifo: 6,
  'pax-header': 72,
};
const ZEROS = '0000000000000000000';
const SEVENS = '7777777777777777777';
const ZERO_CODE = 48;

/** Octal field of `digits` digits and a space; all sevens when it does not fit (tar-stream's rule). */
function octal(value: number, digits: number): string {
  const text = value.toString(8);
  if (text.length > digits) return SEVENS.slice(0, digits) + ' ';
  return ZEROS.slice(0, digits - text.length) + text + ' ';
}

function writeSize(size: number, block: Buffer): void {
  if (size.toString(8).length > 11) {
    // Base-256 for sizes of 8 GiB and more.
    block[124] = 0x80;
    let rest = size;
    for (let i = 11; i > 0; i--) {
      block[124 + i] = rest & 0xff;
      rest = Math.floor(rest / 0x100);
    }
  } else {
    block.write(octal(size, 11), 124);
  }
}

function checksum(block: Buffer): number {
  let sum = 8 * 32;
  for (let i = 0; i < 148; i++) sum += block[i] as number;
  for (let i = 156; i < TAR_BLOCK; i++) sum += block[i] as number;
  return sum;
}

/** Split a name into ustar prefix and name; undefined when it does not fit. */
function splitUstarName(fullName: string): { name: string; prefix: string } | undefined {
  if (Buffer.byteLength(fullName) !== fullName.length) return undefined;
  let name = fullName;
  let prefix = '';
  while (name.length > 100) {
    const slash = name.indexOf('/');
    if (slash === -1) return undefined;
    prefix += prefix ? '/' + name.slice(0, slash) : name.slice(0, slash);
    name = name.slice(slash + 1);
  }
  if (prefix.length > 155) return undefined;
  return { name, prefix };
}

type BlockFields = Omit<TarHeaderFields, 'type' | 'pax'> & { type: TarEntryType | 'pax-header' };

/** One 512-byte ustar block, or undefined when the name or link does not fit. */
function ustarBlock(fields: BlockFields): Buffer | undefined {
  const split = splitUstarName(fields.name);
  if (!split) return undefined;
  if (fields.linkname && Buffer.byteLength(fields.linkname) > 100) return undefined;
  const block = Buffer.alloc(TAR_BLOCK);
  block.write(split.name);
  block.write(octal(fields.mode & 0o7777, 6), 100);
  block.write(octal(fields.uid, 6), 108);
  block.write(octal(fields.gid, 6), 116);
  writeSize(fields.size, block);
  // `| 0` as tar-stream does (its input is a Date; ours whole seconds).
  block.write(octal(fields.mtime | 0, 11), 136);
  block[156] = ZERO_CODE + TYPE_FLAGS[fields.type];
  if (fields.linkname) block.write(fields.linkname, 157);
  block.write('ustar\0', 257, 'latin1');
  block.write('00', 263);
  block.write(octal(fields.devmajor ?? 0, 6), 329);
  block.write(octal(fields.devminor ?? 0, 6), 337);
  if (split.prefix) block.write(split.prefix, 345);
  block.write(octal(checksum(block), 6), 148);
  return block;
}

/** A PAX record, `"<len> key=value\n"`, where len counts itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const length = Buffer.byteLength(body);
  let digits = Math.floor(Math.log(length) / Math.log(10)) + 1;
  if (length + digits >= Math.pow(10, digits)) digits++;
  return `${length + digits}${body}`;
}

/**
 * The header bytes of one entry: a single ustar block, or PAX header + records (padded) + entry
 * header. Its length is what `tarHeaderBytes` computes.
 */
export function encodeTarHeader(fields: TarHeaderFields): Buffer {
  if (!fields.pax) {
    const block = ustarBlock(fields);
    if (block) return block;
  }
  let records = '';
  if (fields.name) records += paxRecord('path', fields.name);
  if (fields.linkname) records += paxRecord('linkpath', fields.linkname);
  for (const [key, value] of Object.entries(fields.pax ?? {})) records += paxRecord(key, value);
  const recordBytes = Buffer.from(records);
  const paxFields: BlockFields = {
    name: 'PaxHeader',
    type: 'pax-header',
    mode: fields.mode,
    uid: fields.uid,
    gid: fields.gid,
    mtime: fields.mtime,
    size: recordBytes.length,
    linkname: fields.linkname ? 'PaxHeader' : undefined,
    devmajor: fields.devmajor,
    devminor: fields.devminor,
  };
  const paxBlock = ustarBlock(paxFields) as Buffer;
  const entryBlock = ustarBlock({ ...paxFields, size: fields.size, type: fields.type }) as Buffer;
  const out = Buffer.alloc(TAR_BLOCK + padToBlock(recordBytes.length) + TAR_BLOCK);
  paxBlock.copy(out, 0);
  recordBytes.copy(out, TAR_BLOCK);
  entryBlock.copy(out, out.length - TAR_BLOCK);
  return out;
}
