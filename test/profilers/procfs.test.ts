import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseProcLimits, parseProcStatus } from '../../src/profilers/common.js';
import { createProcfsProfiler, decodeProcNetAddress, parseInetTable, parseSysvTable, parseUnixTable } from '../../src/profilers/procfs.js';
import { fixtureBinary } from '../helpers/fixtures.js';
import { runProfilerConformance } from '../conformance/profiler-suite.js';
import { skipUnless } from '../helpers/requirements.js';

runProfilerConformance('procfs', () => createProcfsProfiler({ intervalMs: 50 }), {
  requirements: ['root', 'tool:gcc', 'tool:ipcs'],
  completeWhenLaunched: false,
});

describe('/proc/<pid>/status', () => {
  it('reads real ids, supplementary groups (none at all too) and the umask', () => {
    const text = 'Name:\tnginx\nUmask:\t0027\nState:\tS (sleeping)\nTgid:\t42\nPPid:\t1\nUid:\t33\t0\t0\t0\nGid:\t34\t0\t0\t0\nGroups:\t4 24 \nNSpid:\t42\n';
    expect(parseProcStatus(text)).toEqual({ name: 'nginx', ppid: 1, uid: 33, gid: 34, tgid: 42, groups: [4, 24], umask: 0o027 });
    // An empty Groups line must not run into the next line.
    const none = parseProcStatus('Name:\tx\nGroups:\t\nNSpid:\t7\nUid:\t0\t0\t0\t0\n');
    expect(none.groups).toEqual([]);
    expect(none.umask).toBeUndefined();
  });
});

describe('/proc/<pid>/limits', () => {
  const text = [
    'Limit                     Soft Limit           Hard Limit           Units     ',
    'Max cpu time              unlimited            unlimited            seconds   ',
    'Max stack size            8388608              unlimited            bytes     ',
    'Max core file size        0                    unlimited            bytes     ',
    'Max processes             31204                31204                processes ',
    'Max open files            1024                 524288               files     ',
    'Max locked memory         18446744073709551614 18446744073709551614 bytes     ',
    'Max realtime timeout      unlimited            unlimited            us        ',
    '',
  ].join('\n');

  it('reads the limits that matter, soft and hard, by their prlimit names', () => {
    expect(parseProcLimits(text)).toEqual({
      stack: { soft: 8388608, hard: 'unlimited' },
      core: { soft: 0, hard: 'unlimited' },
      nproc: { soft: 31204, hard: 31204 },
      nofile: { soft: 1024, hard: 524288 },
      // memlock: a value JSON cannot carry exactly is left out, never rounded.
    });
    expect(parseProcLimits(text, ['cpu', 'rttime'])).toEqual({ cpu: { soft: 'unlimited', hard: 'unlimited' }, rttime: { soft: 'unlimited', hard: 'unlimited' } });
    expect(parseProcLimits('garbage\nMax open files 12 x\n')).toEqual({});
  });
});

describe('procfs table parsers', () => {
  it('decodes IPv4 and IPv6 addresses as the kernel prints them', () => {
    expect(decodeProcNetAddress('0100007F:1F90')).toEqual({ address: '127.0.0.1', port: 8080 });
    expect(decodeProcNetAddress('00000000000000000000000001000000:0050')).toEqual({ address: '::1', port: 80 });
    expect(decodeProcNetAddress('00000000000000000000000000000000:1F40')).toEqual({ address: '::', port: 8000 });
    expect(decodeProcNetAddress('0000000000000000FFFF00000100007F:0016')).toEqual({ address: '::ffff:127.0.0.1', port: 22 });
  });

  it('reads listening and established TCP rows with their inodes', () => {
    const text = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:AB95 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17537 1 0000000012582bf0 100 0 0 10 0',
      '   1: 0100007F:C3A2 0100007F:AB95 01 00000000:00000000 00:00000000 00000000     0        0 17540 1 0000000012582bf0 100 0 0 10 0',
    ].join('\n');
    const [listen, established] = parseInetTable(text, 'inet', 'tcp');
    expect(listen).toMatchObject({ inode: 17537, listening: true, socket: { localAddress: '127.0.0.1', localPort: 0xab95 } });
    expect(established).toMatchObject({ inode: 17540, established: true, socket: { remoteAddress: '127.0.0.1', remotePort: 0xab95 } });
  });

  it('reads unix sockets: path, abstract name, listening flag', () => {
    const text = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '000000008443af7e: 00000002 00000000 00010000 0001 01 16359 /run/app.sock',
      '00000000c5d7243a: 00000002 00000000 00000000 0002 01 118 @abstract name',
      '00000000c5d7243b: 00000003 00000000 00000000 0001 03 119',
    ].join('\n');
    const [a, b, c] = parseUnixTable(text);
    expect(a).toMatchObject({ inode: 16359, listening: true, socket: { family: 'unix-path', protocol: 'stream', path: '/run/app.sock' } });
    expect(b).toMatchObject({ inode: 118, listening: false, socket: { family: 'unix-abstract', protocol: 'dgram', path: 'abstract name' } });
    expect(c?.socket.path).toBeUndefined();
  });

  it('reads SysV tables by header names, keeping signed keys and pids', () => {
    const shm = [
      '       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap',
      '     17185          1   600                  4096  8477  8478      1     0     0     0     0 1795832917          0 1795832917                  4096                     0',
      '-559038737          2   600                   100    10     0      0     0     0     0     0 0 0 0 0 0',
    ].join('\n');
    expect(parseSysvTable(shm, 'sysv-shm')).toEqual([
      { kind: 'sysv-shm', key: 17185, id: 1, size: 4096, pids: [8477, 8478] },
      { kind: 'sysv-shm', key: -559038737, id: 2, size: 100, pids: [10] },
    ]);
    const msg = ['       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime', '        42          7   644           0          0   300   301     0     0     0     0 0 0 1'].join('\n');
    expect(parseSysvTable(msg, 'sysv-msg')).toEqual([{ kind: 'sysv-msg', key: 42, id: 7, pids: [300, 301] }]);
  });
});

describe.skipIf(skipUnless('root', 'tool:sqlite3', 'tool:python3', 'tool:ipcmk', 'tool:setpriv', 'tool:gcc'))('procfs on real programs', () => {
  const children: Array<ReturnType<typeof spawn>> = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
  });

  it('python3 -m http.server attached by pid: listening socket and its files', async () => {
    const child = spawn('python3', ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const line = await new Promise<string>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(d.toString())));
    const port = Number(/port (\d+)/.exec(line)?.[1]);
    const result = await createProcfsProfiler().profile({ pid: child.pid! }, { durationMs: 300 });
    if (result.isErr()) throw result.error;
    expect(result.value.sockets).toContainEqual(expect.objectContaining({ family: 'inet', protocol: 'tcp', localPort: port, listening: true }));
    expect(result.value.files.some((f) => f.sharedLibrary)).toBe(true);
    expect(result.value.ipc).toEqual([]);
  });

  it('says why each file is there (held open, mapped) and records the ids, groups, umask and limits of what it attached to', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ap-migrate-procfs-ids-'));
    writeFileSync(path.join(dir, 'input.txt'), 'in\n');
    chmodSync(dir, 0o777);
    // Another user, two supplementary groups and umask 027, as a daemon would run.
    const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--groups=100,65534', '--', 'sh', '-c', 'umask 027 && exec "$@"', 'sh', fixtureBinary('files_only'), dir, '30000'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    try {
      await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
      const result = await createProcfsProfiler().profile({ pid: child.pid! }, { durationMs: 200 });
      const profile = result._unsafeUnwrap();
      expect(profile.files.find((f) => f.path === path.join(dir, 'output.txt'))?.reasons).toEqual(['held-open']);
      expect(profile.files.find((f) => /\/libc\.so/.test(f.path))?.reasons).toEqual(['mapped']);
      for (const f of profile.files) expect(f.reasons?.length, f.path).toBeGreaterThan(0);
      expect(profile.processes.find((p) => p.pid === child.pid)).toMatchObject({ uid: 65534, gid: 65534 });
      expect(profile.start).toMatchObject({ groups: [100, 65534], umask: 0o027 });
      // Its resource limits, as /proc/<pid>/limits shows them (it inherited ours).
      expect(profile.start?.rlimits).toEqual(parseProcLimits(readFileSync(`/proc/${child.pid}/limits`, 'utf8')));
      expect(Object.keys(profile.start?.rlimits ?? {}).sort()).toEqual(['core', 'memlock', 'nofile', 'nproc', 'stack']);
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Was a bug: a launch was reported as the program it had exec'd into and the user it dropped
  // to by the first sample (executable, argv and uid of `sleep` as nobody), with our groups and
  // umask: the destination would start a command nobody launched. The tracers report the launch.
  it('a launched wrapper that drops to another user and execs: the profile is the command as launched, run as us', async () => {
    const command = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--', 'sleep', '30'];
    const result = await createProcfsProfiler({ intervalMs: 50 }).profile({ command, cwd: '/' }, { durationMs: 800 });
    const profile = result._unsafeUnwrap();
    expect(profile.executable).toBe(execFileSync('sh', ['-c', 'command -v setpriv'], { encoding: 'utf8' }).trim());
    expect(profile.argv).toEqual(command);
    expect(profile.cwd).toBe('/');
    expect(profile.uid).toBe(process.getuid!());
    // What it became is still seen: its process, as nobody, running sleep.
    expect(profile.processes.find((p) => p.uid === 65534)).toBeDefined();
    expect(profile.files.map((f) => f.path)).toContain(execFileSync('sh', ['-c', 'readlink -f "$(command -v sleep)"'], { encoding: 'utf8' }).trim());
  });

  it('ipcmk: the segment it created is found by its creator pid after it exited', async () => {
    const result = await createProcfsProfiler().profile({ command: ['ipcmk', '-M', '8192'] }, { durationMs: 3000 });
    if (result.isErr()) throw result.error;
    const shm = result.value.ipc.find((i) => i.kind === 'sysv-shm');
    try {
      expect(shm).toMatchObject({ kind: 'sysv-shm', size: 8192 });
    } finally {
      if (shm?.id !== undefined) execFileSync('ipcrm', ['-m', String(shm.id)]);
    }
  });
});

describe('detectProfilers', () => {
  it('names every Linux profiler with a verdict, and a reason for each unavailable one', async () => {
    const { detectProfilers } = await import('../../src/profilers/detect.js');
    const found = await detectProfilers();
    expect(found.map((f) => f.name)).toEqual(['ebpf', 'strace', 'procfs']);
    for (const f of found) if (!f.available) expect(f.reason).toBeTruthy();
    expect(found.find((f) => f.name === 'procfs')?.available).toBe(true);
  });
});
