/**
 * The eBPF profiler: pure tests of the script generator, the output parser and the event
 * tracker (with a fake /proc), then real bpftrace runs: the shared conformance suite, real
 * Debian programs (sqlite3, python3 -m http.server, ipcmk), awkward paths, and cleanup.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ResourceProfile } from '../../src/policy/profile.js';
import { ProfileCollector } from '../../src/profilers/common.js';
import { createEbpfProfiler, ebpfAvailability } from '../../src/profilers/ebpf.js';
import { EbpfEventTracker, parseEbpfLine, parseEbpfRecord, type EbpfLine, type ProcReader } from '../../src/profilers/ebpf-parser.js';
import { generateEbpfScript } from '../../src/profilers/ebpf-script.js';
import { runProfilerConformance } from '../conformance/profiler-suite.js';
import { skipUnless } from '../helpers/requirements.js';
import { expectLookupsProfile, lookupsSite } from './lookups-check.js';
import { expectSoundNginxProfile, NGINX, nginxSite } from './nginx-daemon.js';

/** bpftrace processes running one of our generated programs (their argv holds the marker probe). */
function ourBpftraces(): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (cmdline.includes('bpftrace') && cmdline.includes('sys_enter_getpriority') && state !== 'Z') found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function event(line: EbpfLine) {
  if (line.kind !== 'event') throw new Error(`not an event: ${JSON.stringify(line)}`);
  return line.event;
}

describe('ebpf script generator', () => {
  const all = new Set(['openat', 'open', 'openat2', 'creat', 'chdir', 'fchdir', 'execve', 'execveat', 'newstat', 'newlstat', 'newfstatat', 'statx', 'access', 'faccessat', 'faccessat2', 'socket', 'bind', 'connect', 'listen', 'accept', 'accept4', 'shmget', 'shmat', 'semget', 'semop', 'msgget', 'msgsnd', 'msgrcv', 'mq_open', 'mmap', 'getpriority'].flatMap((s) => [`sys_enter_${s}`, `sys_exit_${s}`]));

  it('seeds the traced pids, filters every probe on them and puts the marker probe last', () => {
    const script = generateEbpfScript({ seedPids: [42, 43], markerPid: 7, markerNonce: 9_000_001, availableSyscallEvents: all, exitHasGroupDead: true });
    expect(script).toMatch(/BEGIN \{\n {2}@t\[42\] = 1;\n {2}@t\[43\] = 1;\n\}/);
    const probes = script.split('\n\n').filter((b) => /^tracepoint:syscalls:sys_enter_/.test(b));
    for (const probe of probes.slice(0, -1)) expect(probe).toMatch(/\/@t\[pid\]/);
    expect(script.trim().split('\n\n').at(-1)).toContain('sys_enter_getpriority /pid == 7 && args->who == 9000001/');
    expect(script).toContain('args->group_dead');
    // Exit probes print only successful calls.
    expect(script).toMatch(/sys_exit_openat [^]*?if \(args->ret >= 0\)/);
    // An absolute path opened again with the same flags is skipped only when its descriptor was
    // last printed by that very line (47 is '/'), so user space always knows what a descriptor is.
    expect(script).toContain('$abs = *(uint8*)uptr($e.0) == 47;');
    expect(script).toContain('@seen[pid, $e.1, $s] != @fdl[pid, args->ret]');
    // A failed open prints too (its fd is the negative errno), except EINTR, EAGAIN, EEXIST and restarts.
    expect(script).toMatch(/sys_exit_openat [^]*?\} else if \(\(args->ret != -4 && args->ret != -11 && args->ret != -17/);
    // Failed exec, stat and access lookups print P lines; a successful one prints nothing.
    for (const name of ['execve', 'newfstatat', 'statx', 'faccessat2', 'newstat', 'access']) {
      expect(script, name).toMatch(new RegExp(`sys_exit_${name} /@lk\\[tid\\]\\.0/ \\{\\n  if \\(args->ret < 0 && `));
    }
    expect(script).toMatch(/sys_exit_chdir [^]*?else if \(\(args->ret != -4[^\n]*printf\("P/);
  });

  it('leaves the stat and access families out when traceLookups is false', () => {
    const script = generateEbpfScript({ seedPids: [1], markerPid: 2, markerNonce: 5_000_000, availableSyscallEvents: all, exitHasGroupDead: true, traceLookups: false });
    for (const name of ['newstat', 'newlstat', 'newfstatat', 'statx', 'access', 'faccessat', 'faccessat2']) expect(script).not.toContain(`sys_enter_${name} `);
    expect(script).toContain('sys_exit_execve ');
  });

  it('leaves out syscalls the kernel lacks and falls back when exit has no group_dead', () => {
    const arm64 = new Set([...all].filter((e) => !/_(open|creat)$/.test(e)));
    const script = generateEbpfScript({ seedPids: [1], markerPid: 2, markerNonce: 5_000_000, availableSyscallEvents: arm64, exitHasGroupDead: false });
    expect(script).not.toContain('sys_enter_open ');
    expect(script).not.toContain('sys_enter_creat');
    expect(script).toContain('sys_enter_openat ');
    expect(script).not.toContain('group_dead');
    // Every map the program uses is cleared at exit, so bpftrace prints none.
    for (const map of new Set(script.match(/@[a-z]+/g))) expect(script).toContain(`clear(${map})`);
  });
});

describe('ebpf output parser', () => {
  it('decodes an open with a path holding tabs, quotes, a newline and UTF-8 escaped byte by byte', () => {
    const raw = String.raw`{"type": "printf", "data": "O\t10\t11\t-100\t577\t3\t/tmp/\uffffffc3\uffffffbc\t\"x\\n\n\n"}`;
    const parsed = parseEbpfLine(raw);
    expect(parsed.isOk()).toBe(true);
    expect(event(parsed._unsafeUnwrap())).toEqual({ type: 'open', pid: 10, tid: 11, dirfd: -100, flags: 577, fd: 3, path: '/tmp/ü\t"x\\n\n', truncated: false });
  });

  it('leaves an escaped backslash before "uffffff" alone', () => {
    const raw = String.raw`{"type": "printf", "data": "C\t1\t1\t/a\\uffffff41\n"}`;
    expect(event(parseEbpfLine(raw)._unsafeUnwrap())).toMatchObject({ type: 'chdir', path: '/a\\uffffff41' });
  });

  it('marks a string of the maximum length as truncated', () => {
    const long = '/' + 'a'.repeat(198);
    expect(event(parseEbpfRecord(`X\t5\t5\t1\t0\t${long}`))).toMatchObject({ type: 'exec', truncated: true });
    expect(event(parseEbpfRecord(`X\t5\t5\t1\t0\t${long.slice(1)}`))).toMatchObject({ type: 'exec', truncated: false });
    expect(event(parseEbpfRecord(`XA\t5\t5\t0\t${long}`))).toMatchObject({ type: 'exec_arg', truncated: true });
  });

  it('decodes IPv4, IPv6, unix and abstract socket addresses', () => {
    // 127.0.0.1:8080 -> port bytes 0x1f 0x90 read as little-endian u16 = 0x901f.
    const v4 = event(parseEbpfRecord(`B\t1\t1\t0\t3\t2\t${0x901f}\t${0x0100007f}\t0\t0\t0\tx`));
    expect(v4).toMatchObject({ type: 'bind', fd: 3, address: { family: 2, port: 8080, ipv4: '127.0.0.1' } });
    const loopback6 = (1n << 56n).toString(); // ::1 as the second little-endian u64
    const v6 = event(parseEbpfRecord(`K\t1\t1\t-115\t4\t10\t${0x5000}\t0\t0\t${loopback6}\t0\t`));
    expect(v6).toMatchObject({ type: 'connect', ret: -115, address: { family: 10, port: 80, ipv6: '::1' } });
    const unix = event(parseEbpfRecord('K\t1\t1\t0\t5\t1\t0\t0\t0\t0\t0\t/run/x.sock'));
    expect(unix).toMatchObject({ address: { family: 1, path: '/run/x.sock', abstract: false } });
    const abstract = event(parseEbpfRecord('B\t1\t1\t0\t5\t1\t0\t0\t0\t0\t1\tmy-name'));
    expect(abstract).toMatchObject({ address: { path: 'my-name', abstract: true } });
  });

  it('decodes IPC, fork, exit, readiness, heartbeats and lost events', () => {
    expect(event(parseEbpfRecord('HG\t1\t1\t1515870810\t4096\t7'))).toEqual({ type: 'shmget', pid: 1, tid: 1, key: 1515870810, size: 4096, id: 7 });
    expect(event(parseEbpfRecord('SO\t1\t2\t9'))).toEqual({ type: 'semop', pid: 1, tid: 2, id: 9 });
    expect(event(parseEbpfRecord('Q\t1\t1\t3\t66\tqueue'))).toMatchObject({ type: 'mq_open', name: 'queue' });
    expect(event(parseEbpfRecord('F\t1\t1\t99'))).toEqual({ type: 'fork', pid: 1, tid: 1, child: 99 });
    expect(parseEbpfLine('{"type": "printf", "data": "R\\n"}')._unsafeUnwrap()).toEqual({ kind: 'ready' });
    expect(parseEbpfLine('{"type": "printf", "data": "T\\n"}')._unsafeUnwrap()).toEqual({ kind: 'tick' });
    expect(parseEbpfLine('{"type": "lost_events", "data": {"events": 12}}')._unsafeUnwrap()).toEqual({ kind: 'lost', count: 12 });
    expect(parseEbpfLine('{"type": "attached_probes", "data": {"probes": 45}}')._unsafeUnwrap()).toEqual({ kind: 'other', type: 'attached_probes' });
  });

  it('decodes a failed open (negative fd) and a failed lookup (P)', () => {
    expect(event(parseEbpfRecord('O\t5\t6\t3\t0\t-2\tabsent.txt'))).toEqual({ type: 'open', pid: 5, tid: 6, dirfd: 3, flags: 0, fd: -2, path: 'absent.txt', truncated: false });
    expect(event(parseEbpfRecord('P\t5\t6\t-100\t-20\t/etc/passwd/x'))).toEqual({ type: 'probe', pid: 5, tid: 6, dirfd: -100, ret: -20, path: '/etc/passwd/x', truncated: false });
  });

  it('rejects malformed lines with a message instead of throwing', () => {
    expect(parseEbpfLine('Attaching 3 probes...')._unsafeUnwrapErr().message).toMatch(/not JSON/);
    expect(parseEbpfLine('{"type": "printf", "data": "O\\t1\\t2\\n"}')._unsafeUnwrapErr().message).toMatch(/expected 6 fields/);
    expect(parseEbpfLine('{"type": "printf", "data": "ZZ\\t1\\n"}')._unsafeUnwrapErr().message).toMatch(/unknown record tag/);
    expect(parseEbpfLine('{"type": "printf", "data": "F\\tx\\t1\\t2\\n"}')._unsafeUnwrapErr().message).toMatch(/pid is not an integer/);
  });
});

describe('ebpf event tracker (fake /proc)', () => {
  function fakeProc(links: Record<string, string>, files: Record<string, string> = {}): ProcReader {
    return { readlink: (p) => links[p], readFile: (p) => files[p] };
  }

  async function build(tracker: EbpfEventTracker): Promise<ResourceProfile> {
    const result = await tracker.collector.build({ executable: '/bin/true', argv: ['true'], cwd: '/', uid: 0, gid: 0 }, { profiler: 'ebpf', complete: true });
    return result._unsafeUnwrap();
  }

  it('resolves relative paths through chdir, fork and *at directory descriptors', async () => {
    const proc = fakeProc({ '/proc/10/cwd': '/srv' }, { '/proc/11/status': 'Tgid:\t11\n' });
    // (the files need not exist: what was recorded is checked before the file system is asked)
    const tracker = new EbpfEventTracker(new ProfileCollector(), 10, proc);
    tracker.seed(10);
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0, fd: 3, path: 'a.txt', truncated: false });
    tracker.handle({ type: 'chdir', pid: 10, tid: 10, path: 'data', truncated: false });
    tracker.handle({ type: 'fork', pid: 10, tid: 10, child: 11 });
    tracker.handle({ type: 'open', pid: 11, tid: 11, dirfd: -100, flags: 0o101, fd: 4, path: '../b.txt', truncated: false });
    tracker.handle({ type: 'open', pid: 11, tid: 11, dirfd: -100, flags: 0o200000, fd: 5, path: '/etc/dir', truncated: false });
    tracker.handle({ type: 'open', pid: 11, tid: 11, dirfd: 5, flags: 2, fd: 6, path: 'c.conf', truncated: false });
    const seen = tracker.collector.observed().files;
    expect(seen['/srv/a.txt']?.access).toEqual(['read']);
    expect(seen['/srv/b.txt']?.access).toEqual(['write']);
    expect(seen['/etc/dir/c.conf']).toEqual({ access: ['read', 'write'], reasons: ['traced'] });
    expect([...tracker.processes.keys()].sort()).toEqual([10, 11]);
    expect(tracker.processes.get(11)?.ppid).toBe(10);
  });

  it('makes failed lookups probes, never uses, resolved like uses', () => {
    const proc = fakeProc({ '/proc/10/cwd': '/srv' });
    const tracker = new EbpfEventTracker(new ProfileCollector(), 10, proc);
    tracker.seed(10);
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0, fd: -2, path: 'missing.conf', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0o200000, fd: 4, path: '/etc', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: 4, flags: 0, fd: -2, path: 'userdb', truncated: false });
    tracker.handle({ type: 'probe', pid: 10, tid: 10, dirfd: 4, ret: -2, path: 'absent', truncated: false });
    tracker.handle({ type: 'probe', pid: 10, tid: 10, dirfd: -100, ret: -2, path: '/usr/local/sbin/app', truncated: false });
    // A failed chdir changes nothing; EEXIST is no probe (the path is there).
    tracker.handle({ type: 'probe', pid: 10, tid: 10, dirfd: -100, ret: -2, path: 'nodir', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0o301, fd: -17, path: '/srv/lock', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0, fd: 5, path: 'app.conf', truncated: false });
    const seen = tracker.collector.observed();
    expect(seen.probes).toEqual(['/etc/absent', '/etc/userdb', '/srv/missing.conf', '/srv/nodir', '/usr/local/sbin/app']);
    expect(Object.keys(seen.files).sort()).toEqual(['/etc', '/srv/app.conf']);
    expect(seen.files['/srv/app.conf']).toEqual({ access: ['read'], reasons: ['traced'] });
  });

  it('never guesses the directory of an unknown descriptor or a lost cwd: notes it, incomplete', async () => {
    // /proc says what fd 7 is *now*; at the time of the call it may have been another directory.
    const proc = fakeProc({ '/proc/10/cwd': '/srv', '/proc/10/fd/7': '/var/lib', '/proc/11/cwd': '/elsewhere' }, { '/proc/11/status': 'Tgid:\t11\n' });
    const tracker = new EbpfEventTracker(new ProfileCollector(), 10, proc);
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: 7, flags: 0, fd: 3, path: 'db.sqlite', truncated: false });
    tracker.handle({ type: 'fchdir', pid: 10, tid: 10, fd: 9 });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0, fd: 4, path: 'after-fchdir.txt', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0, fd: 5, path: '/etc/hosts', truncated: false });
    const profile = await build(tracker);
    expect(profile.files.map((f) => f.path)).toEqual(['/etc/hosts']);
    expect(profile.completeness.complete).toBe(false);
    expect(profile.completeness.notes.join(' ')).toMatch(/2 relative paths could not be resolved .*"db\.sqlite" \(descriptor 7 of pid 10 unknown\)/);
  });

  it('resolves a descriptor by the open that last returned its number (a reused number is the new file)', () => {
    const tracker = new EbpfEventTracker(new ProfileCollector(), 10, fakeProc({ '/proc/10/cwd': '/' }));
    tracker.seed(10);
    // systemd's chase(): open("/"), openat(3, "usr") = 4, close(3), openat(4, "local") = 3 ...
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0o12000000, fd: 3, path: '/', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: 3, flags: 0o12400000, fd: 4, path: 'usr', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: 4, flags: 0o12400000, fd: 3, path: 'local', truncated: false });
    // ... and again: the script prints this second open("/") because fd 3 was last printed as /usr/local.
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0o12000000, fd: 3, path: '/', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: 3, flags: 0o12400000, fd: 4, path: 'usr', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: 4, flags: 0o12400000, fd: -2, path: 'nope', truncated: false });
    const seen = tracker.collector.observed();
    expect(Object.keys(seen.files).sort()).toEqual(['/', '/usr', '/usr/local']);
    expect(seen.probes).toEqual(['/usr/nope']);
  });

  it("holds a child's events that arrive before its fork line (per-CPU buffers), then resolves them with the parent's cwd", () => {
    const proc = fakeProc({ '/proc/10/cwd': '/srv' }, { '/proc/11/status': 'Tgid:\t11\nUid:\t33\t33\t33\t33\nGid:\t34\t34\t34\t34\n' });
    const tracker = new EbpfEventTracker(new ProfileCollector(), 10, proc);
    tracker.seed(10);
    tracker.handle({ type: 'chdir', pid: 10, tid: 10, path: 'data', truncated: false });
    tracker.handle({ type: 'open', pid: 11, tid: 11, dirfd: -100, flags: 0, fd: 3, path: 'child.txt', truncated: false });
    tracker.handle({ type: 'fork', pid: 10, tid: 10, child: 11 });
    tracker.handle({ type: 'open', pid: 12, tid: 12, dirfd: -100, flags: 0, fd: 3, path: 'orphan.txt', truncated: false });
    tracker.finish();
    const seen = tracker.collector.observed();
    expect(Object.keys(seen.files)).toEqual(['/srv/data/child.txt']);
    expect(tracker.processes.get(11)).toEqual({ ppid: 10, uid: 33, gid: 34 });
  });

  it('counts a thread as no process, and a vanished fork child only once it shows up as a process', () => {
    const proc = fakeProc({ '/proc/10/cwd': '/' }, { '/proc/12/status': 'Tgid:\t10\n' });
    const tracker = new EbpfEventTracker(new ProfileCollector(), 10, proc);
    tracker.seed(10);
    tracker.handle({ type: 'fork', pid: 10, tid: 10, child: 12 });
    tracker.handle({ type: 'fork', pid: 10, tid: 10, child: 13 });
    expect([...tracker.processes.keys()]).toEqual([10]);
    tracker.handle({ type: 'exit', pid: 13, tid: 13 });
    expect([...tracker.processes.keys()].sort()).toEqual([10, 13]);
    expect(tracker.live.has(13)).toBe(false);
  });

  it('names SysV ids by key (from the get call or /proc/sysvipc), POSIX queues with their slash, /dev/shm as POSIX shm', async () => {
    const sysvShm = '       key      shmid perms       size  cpid  lpid\n 1515870810         77   600       8192   5   5\n';
    const tracker = new EbpfEventTracker(new ProfileCollector(), 10, fakeProc({ '/proc/10/cwd': '/' }, { '/proc/sysvipc/shm': sysvShm }));
    tracker.handle({ type: 'semget', pid: 10, tid: 10, key: 1234, size: 1, id: 5 });
    tracker.handle({ type: 'semop', pid: 10, tid: 10, id: 5 });
    tracker.handle({ type: 'shmat', pid: 10, tid: 10, id: 77 });
    tracker.handle({ type: 'mq_open', pid: 10, tid: 10, fd: 3, flags: 66, name: 'jobs', truncated: false });
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0o102, fd: 4, path: '/dev/shm/area', truncated: false });
    const profile = await build(tracker);
    expect(profile.ipc).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'sysv-sem', key: 1234, id: 5 }),
        expect.objectContaining({ kind: 'sysv-shm', key: 1515870810, id: 77, size: 8192 }),
        { kind: 'posix-mq', name: '/jobs' },
        { kind: 'posix-shm', name: '/area' },
      ]),
    );
    expect(profile.ipc).toHaveLength(4);
    expect(profile.files).toEqual([]);
  });

  it('records listening and connected sockets with their addresses', async () => {
    const tracker = new EbpfEventTracker(new ProfileCollector(), 10, fakeProc({ '/proc/10/cwd': '/' }));
    const v4 = { family: 2, port: 8080, ipv4: '127.0.0.1', ipv6: '::', path: '', abstract: false };
    tracker.handle({ type: 'socket', pid: 10, tid: 10, fd: 3, family: 2, socketType: 0x80001, protocol: 0 });
    tracker.handle({ type: 'bind', pid: 10, tid: 10, ret: 0, fd: 3, address: v4, truncated: false });
    tracker.handle({ type: 'listen', pid: 10, tid: 10, fd: 3 });
    tracker.handle({ type: 'socket', pid: 10, tid: 10, fd: 4, family: 2, socketType: 2, protocol: 0 });
    tracker.handle({ type: 'connect', pid: 10, tid: 10, ret: 0, fd: 4, address: { ...v4, ipv4: '10.0.0.53', port: 53 }, truncated: false });
    tracker.handle({ type: 'socket', pid: 10, tid: 10, fd: 5, family: 1, socketType: 1, protocol: 0 });
    tracker.handle({ type: 'connect', pid: 10, tid: 10, ret: 0, fd: 5, address: { ...v4, family: 1, path: 'bus', abstract: true }, truncated: false });
    tracker.handle({ type: 'connect', pid: 10, tid: 10, ret: 0, fd: 5, address: { ...v4, family: 1, path: 'run/app.sock', abstract: false }, truncated: false });
    const profile = await build(tracker);
    expect(profile.sockets).toEqual(
      expect.arrayContaining([
        { family: 'inet', protocol: 'tcp', localAddress: '127.0.0.1', localPort: 8080, listening: true },
        { family: 'inet', protocol: 'udp', remoteAddress: '10.0.0.53', remotePort: 53, listening: false },
        { family: 'unix-abstract', protocol: 'stream', path: 'bus', listening: false },
        { family: 'unix-path', protocol: 'stream', path: '/run/app.sock', listening: false },
      ]),
    );
    expect(profile.sockets).toHaveLength(4);
  });

  it('leaves out paths bpftrace cut and says so', async () => {
    const tracker = new EbpfEventTracker(new ProfileCollector(), 10, fakeProc({ '/proc/10/cwd': '/' }));
    tracker.handle({ type: 'open', pid: 10, tid: 10, dirfd: -100, flags: 0, fd: 3, path: `/${'x'.repeat(198)}`, truncated: true });
    const profile = await build(tracker);
    expect(profile.files).toEqual([]);
    expect(profile.completeness.notes.join(' ')).toMatch(/cuts strings at 199 bytes/);
    expect(tracker.truncated).toHaveLength(1);
  });
});

// Whatever a test did, no bpftrace of ours may outlive it (this hook covers the conformance suite too).
afterEach(() => {
  expect(ourBpftraces()).toEqual([]);
});

runProfilerConformance('ebpf', () => createEbpfProfiler(), { requirements: ['root', 'tool:bpftrace'], completeWhenLaunched: true });

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

describe.skipIf(skipUnless('root', 'tool:bpftrace', 'tool:sqlite3', 'tool:python3', 'tool:ipcmk'))('ebpf profiler on real programs', () => {
  let work: string;
  const profiler = createEbpfProfiler();

  beforeAll(() => {
    work = mkdtempSync(path.join(os.tmpdir(), 'ap-migrate-ebpf-'));
  });
  afterEach(() => {
    expect(ourBpftraces()).toEqual([]);
  });
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('sqlite3 on a database file uses files only', async () => {
    const db = path.join(work, 'shop.db');
    const result = await profiler.profile({ command: ['sqlite3', db, 'CREATE TABLE t(x); INSERT INTO t VALUES (1); SELECT * FROM t;'], cwd: work }, { durationMs: 20_000 });
    const profile = result._unsafeUnwrap();
    expect(profile.executable).toBe('/usr/bin/sqlite3');
    const file = profile.files.find((f) => f.path === db);
    expect(file, profile.files.map((f) => f.path).join('\n')).toBeDefined();
    expect(file!.access).toEqual(expect.arrayContaining(['read', 'write']));
    expect(file!.created).toBe(true);
    expect(profile.files.find((f) => /libsqlite3\.so/.test(f.path))?.sharedLibrary).toBe(true);
    expect(profile.files.find((f) => /ld-linux/.test(f.path))?.sharedLibrary).toBe(true);
    expect(profile.sockets).toEqual([]);
    expect(profile.ipc).toEqual([]);
    expect(profile.completeness.complete).toBe(true);
  });

  it('python3 -m http.server listens on its port and reads its modules', async () => {
    const port = await freePort();
    const result = await profiler.profile({ command: ['/usr/bin/python3', '-m', 'http.server', '--bind', '127.0.0.1', String(port)], cwd: work }, { durationMs: 3000 });
    const profile = result._unsafeUnwrap();
    expect(profile.sockets).toContainEqual(expect.objectContaining({ family: 'inet', protocol: 'tcp', localAddress: '127.0.0.1', localPort: port, listening: true }));
    expect(profile.files.some((f) => /\/http\/(__pycache__\/)?server/.test(f.path))).toBe(true);
    expect(profile.ipc).toEqual([]);
    // It was still serving when the duration ended: stopped, and the profile says it may miss uses.
    expect(profile.completeness.complete).toBe(false);
  });

  it('ipcmk creates a SysV segment and a semaphore set, named by key', async () => {
    const result = await profiler.profile({ command: ['ipcmk', '-M', '4096', '-S', '2'], cwd: work }, { durationMs: 20_000 });
    const profile = result._unsafeUnwrap();
    try {
      const shm = profile.ipc.find((u) => u.kind === 'sysv-shm');
      const sem = profile.ipc.find((u) => u.kind === 'sysv-sem');
      expect(shm).toMatchObject({ size: 4096 });
      expect(sem?.key).toBeTypeOf('number');
      // Ground truth: the kernel's table has the same ids and keys.
      const table = readFileSync('/proc/sysvipc/shm', 'utf8');
      expect(table).toMatch(new RegExp(`^\\s*${shm!.key}\\s+${shm!.id}\\s`, 'm'));
      expect(profile.sockets).toEqual([]);
    } finally {
      for (const use of profile.ipc) {
        if (use.id !== undefined) spawnSync('ipcrm', [use.kind === 'sysv-shm' ? '-m' : '-s', String(use.id)], { stdio: 'ignore' });
      }
    }
  });

  it('keeps paths with spaces, tabs, newlines and UTF-8 exact, and says when a path was too long', async () => {
    const odd = path.join(work, 'we ird\tname\nü.txt');
    const deep = path.join(work, 'd'.repeat(100), 'e'.repeat(100));
    mkdirSync(deep, { recursive: true });
    writeFileSync(path.join(deep, 'long.txt'), 'x');
    const script = `open(${JSON.stringify(odd)}, "w").close(); open(${JSON.stringify(path.join(deep, 'long.txt'))}).close()`;
    const result = await profiler.profile({ command: ['/usr/bin/python3', '-S', '-c', script], cwd: work }, { durationMs: 20_000 });
    const profile = result._unsafeUnwrap();
    expect(profile.files.find((f) => f.path === odd)?.access).toEqual(['write']);
    expect(profile.files.some((f) => f.path.endsWith('long.txt'))).toBe(false);
    expect(profile.completeness.complete).toBe(false);
    expect(profile.completeness.notes.join(' ')).toMatch(/cuts strings/);
  });
});

describe.skipIf(skipUnless('root', 'tool:bpftrace', 'tool:gcc'))('ebpf profiler: failed lookups and relative paths', () => {
  afterEach(() => {
    expect(ourBpftraces()).toEqual([]);
  });

  it('a program that chdirs, forks, walks directory descriptors and fails lookups: real uses with absolute paths, the rest probes', async () => {
    const site = lookupsSite();
    try {
      const result = await createEbpfProfiler().profile({ command: site.command, cwd: site.elsewhere }, { durationMs: 20_000 });
      expectLookupsProfile(result._unsafeUnwrap(), site, { lookups: true });
    } finally {
      site.cleanup();
    }
  }, 40_000);

  it.skipIf(skipUnless(`tool:${NGINX}`))("Debian's nginx with workers (daemon off; master_process on): no nonexistent file, probes instead, workers' ids", async () => {
    const site = await nginxSite();
    try {
      const result = await createEbpfProfiler().profile({ command: site.command, cwd: site.dir }, { durationMs: 2500 });
      const profile = result._unsafeUnwrap();
      expectSoundNginxProfile(profile, site);
      // Traced, and what the dynamic loader was mapped from.
      expect(profile.files.find((f) => /ld-linux/.test(f.path))?.reasons).toContain('mapped');
    } finally {
      site.cleanup();
    }
  }, 40_000);
});

describe.skipIf(skipUnless('root', 'tool:bpftrace'))('ebpf profiler set-up and teardown', () => {
  afterEach(() => {
    expect(ourBpftraces()).toEqual([]);
  });

  it('an abort while bpftrace is starting returns a typed error and leaves nothing running', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const result = await createEbpfProfiler().profile({ command: ['/bin/sleep', '30'] }, { signal: controller.signal });
    expect(result.isErr() && result.error.code).toBe('PROFILER_FAILED');
    expect(result.isErr() && result.error.message).toMatch(/aborted/);
    expect(spawnSync('pgrep', ['-f', '^/bin/sleep 30$']).status).toBe(1);
  });

  it('an abort while watching returns what was seen so far and stops the program', async () => {
    const marker = path.join(os.tmpdir(), `ap-migrate-ebpf-abort-${process.pid}.txt`);
    const controller = new AbortController();
    let armed = false;
    const script = `open(${JSON.stringify(marker)}, "w").close()\nimport time\ntime.sleep(60)`;
    const result = await createEbpfProfiler().profile(
      { command: ['/usr/bin/python3', '-S', '-c', script] },
      {
        onProgress: () => {
          // Progress starts once the program is released: abort a moment later.
          if (!armed) setTimeout(() => controller.abort(), 1500);
          armed = true;
        },
        signal: controller.signal,
      },
    );
    rmSync(marker, { force: true });
    const profile = result._unsafeUnwrap();
    expect(profile.files.find((f) => f.path === marker)?.access).toEqual(['write']);
    expect(profile.completeness.complete).toBe(false);
    expect(profile.completeness.notes.join(' ')).toMatch(/aborted/);
    for (const proc of profile.processes) {
      const stat = (() => {
        try {
          return readFileSync(`/proc/${proc.pid}/stat`, 'utf8');
        } catch {
          return '';
        }
      })();
      expect(stat === '' || /\) [ZX] /.test(stat)).toBe(true);
    }
  });

  it('keepRunning leaves the launched program running', async () => {
    const result = await createEbpfProfiler().profile({ command: ['/bin/sleep', '37'] }, { durationMs: 300, keepRunning: true });
    const profile = result._unsafeUnwrap();
    const pid = profile.processes[0]!.pid;
    try {
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toBe('/bin/sleep\u000037\u0000');
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });

  it('a missing bpftrace is PROFILER_UNAVAILABLE naming the tool', async () => {
    const profiler = createEbpfProfiler({ bpftraceBinary: 'no-such-bpftrace' });
    const result = await profiler.profile({ command: ['/bin/true'] });
    expect(result.isErr() && result.error.code).toBe('PROFILER_UNAVAILABLE');
    expect(result.isErr() && result.error.message).toMatch(/no-such-bpftrace/);
    const availability = await profiler.availability();
    expect(availability).toMatchObject({ name: 'ebpf', available: false });
    expect(availability.reason).toMatch(/no-such-bpftrace/);
  });

  it('mounts tracefs when it is missing', async () => {
    const mounted = () => readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === '/sys/kernel/tracing' && l.split(' ')[2] === 'tracefs');
    if (mounted()) {
      // Another user of tracefs holds it busy: then the mount step cannot be shown here.
      if (spawnSync('umount', ['/sys/kernel/tracing']).status !== 0) return;
    }
    expect(mounted()).toBe(false);
    const refused = await createEbpfProfiler({ mountTracefs: false }).profile({ command: ['/bin/true'] });
    expect(refused.isErr() && refused.error.message).toMatch(/tracefs is not mounted/);
    const availability = await ebpfAvailability();
    expect(availability.available).toBe(true);
    expect(availability.reason).toMatch(/mounted tracefs/);
    expect(mounted()).toBe(true);
  });

  it('works end to end even where RLIMIT_MEMLOCK cannot be raised', async () => {
    const availability = await ebpfAvailability();
    expect(availability.available).toBe(true);
    // The kernel really loads our full program: a one-second profile of sleep works end to end.
    const result = await createEbpfProfiler().profile({ command: ['/bin/sleep', '0.2'] }, { durationMs: 20_000 });
    const profile = result._unsafeUnwrap();
    expect(profile.executable).toBe('/bin/sleep');
    expect(execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()).toBe(profile.platform.release);
  });
});
