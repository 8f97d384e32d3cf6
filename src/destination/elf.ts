/**
 * A small ELF reader: the interpreter (`PT_INTERP`) and the needed libraries (`DT_NEEDED`) of a
 * binary, read from its bytes. It replaces `ldd`, which runs the program's own loader (and so
 * lets a crafted binary run code, or print any path it likes) as root at the destination.
 * The input comes from the program being moved: every offset is bounds-checked and a malformed
 * file gives `undefined`, never an exception.
 *
 * @module
 */

/** What the root builder needs to know about one ELF file. */
export interface ElfFacts {
  /** 32 or 64. */
  bits: 32 | 64;
  littleEndian: boolean;
  /** `e_machine`, e.g. 62 for x86-64. */
  machine: number;
  /** `e_type`: 2 executable, 3 shared object (PIE executables are 3 too). */
  type: number;
  /** `PT_INTERP`, the dynamic loader path, when present. */
  interpreter?: string;
  /** `DT_NEEDED` entries, in order. */
  needed: string[];
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
/** Bounds on what a sane binary has; anything larger is refused rather than looped over. */
const MAX_PROGRAM_HEADERS = 4096;
const MAX_DYNAMIC_ENTRIES = 65536;
const MAX_STRING = 4096;

/** Whether `bytes` starts with the ELF magic. */
export function isElf(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46;
}

interface Reader {
  u16(off: number): number;
  u32(off: number): number;
  /** A 32- or 64-bit word as a number (undefined when it does not fit a safe integer). */
  word(off: number): number | undefined;
}

function readerFor(buf: Buffer, bits: 32 | 64, le: boolean): Reader {
  const u16 = (off: number) => (le ? buf.readUInt16LE(off) : buf.readUInt16BE(off));
  const u32 = (off: number) => (le ? buf.readUInt32LE(off) : buf.readUInt32BE(off));
  const word = (off: number): number | undefined => {
    if (bits === 32) return u32(off);
    const v = le ? buf.readBigUInt64LE(off) : buf.readBigUInt64BE(off);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
  };
  return { u16, u32, word };
}

interface Segment {
  type: number;
  offset: number;
  vaddr: number;
  filesz: number;
}

/** Parse `buf` (the whole file, or at least its headers and dynamic section). */
export function readElf(buf: Buffer): ElfFacts | undefined {
  try {
    return parse(buf);
  } catch {
    // A read past the end of a truncated or crafted file: not an ELF we can use.
    return undefined;
  }
}

function parse(buf: Buffer): ElfFacts | undefined {
  if (buf.length < 52 || !isElf(buf)) return undefined;
  const cls = buf[4];
  const data = buf[5];
  if ((cls !== 1 && cls !== 2) || (data !== 1 && data !== 2)) return undefined;
  const bits = cls === 1 ? 32 : 64;
  const r = readerFor(buf, bits, data === 1);
  const type = r.u16(16);
  const machine = r.u16(18);
  const phoff = bits === 64 ? r.word(32) : r.u32(28);
  const phentsize = r.u16(bits === 64 ? 54 : 42);
  const phnum = r.u16(bits === 64 ? 56 : 44);
  if (phoff === undefined || phnum > MAX_PROGRAM_HEADERS || phentsize < (bits === 64 ? 56 : 32)) return undefined;
  const segments: Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + phentsize > buf.length) return undefined;
    const segType = r.u32(at);
    const offset = bits === 64 ? r.word(at + 8) : r.u32(at + 4);
    const vaddr = bits === 64 ? r.word(at + 16) : r.u32(at + 8);
    const filesz = bits === 64 ? r.word(at + 32) : r.u32(at + 16);
    if (offset === undefined || vaddr === undefined || filesz === undefined) return undefined;
    segments.push({ type: segType, offset, vaddr, filesz });
  }
  const facts: ElfFacts = { bits, littleEndian: data === 1, machine, type, needed: [] };
  const interp = segments.find((s) => s.type === PT_INTERP);
  if (interp) {
    const s = cString(buf, interp.offset, Math.min(interp.filesz, MAX_STRING));
    if (s === undefined) return undefined;
    facts.interpreter = s;
  }
  const dynamic = segments.find((s) => s.type === PT_DYNAMIC);
  if (dynamic) {
    const needed = neededOf(buf, r, bits, dynamic, segments.filter((s) => s.type === PT_LOAD));
    if (!needed) return undefined;
    facts.needed = needed;
  }
  return facts;
}

/** The DT_NEEDED names: string offsets into DT_STRTAB, whose address maps to the file through a PT_LOAD. */
function neededOf(buf: Buffer, r: Reader, bits: 32 | 64, dynamic: Segment, loads: Segment[]): string[] | undefined {
  const entrySize = bits === 64 ? 16 : 8;
  const count = Math.min(Math.floor(dynamic.filesz / entrySize), MAX_DYNAMIC_ENTRIES);
  const neededOffsets: number[] = [];
  let strtabAddr: number | undefined;
  for (let i = 0; i < count; i++) {
    const at = dynamic.offset + i * entrySize;
    if (at + entrySize > buf.length) return undefined;
    const tag = bits === 64 ? r.word(at) : r.u32(at);
    const value = r.word(at + entrySize / 2);
    if (tag === DT_NULL) break;
    if (value === undefined) continue;
    if (tag === DT_NEEDED) neededOffsets.push(value);
    else if (tag === DT_STRTAB) strtabAddr = value;
  }
  if (neededOffsets.length === 0) return [];
  if (strtabAddr === undefined) return undefined;
  const load = loads.find((s) => strtabAddr! >= s.vaddr && strtabAddr! < s.vaddr + s.filesz);
  if (!load) return undefined;
  const strtab = load.offset + (strtabAddr - load.vaddr);
  const names: string[] = [];
  for (const off of neededOffsets) {
    const name = cString(buf, strtab + off, MAX_STRING);
    if (name === undefined) return undefined;
    names.push(name);
  }
  return names;
}

/** A NUL-terminated string at `offset`, at most `max` bytes; undefined when it runs off the end. */
function cString(buf: Buffer, offset: number, max: number): string | undefined {
  if (offset < 0 || offset >= buf.length) return undefined;
  const end = buf.indexOf(0, offset);
  if (end < 0 || end - offset > max) return undefined;
  return buf.toString('latin1', offset, end);
}
