/**
 * FreeBSD profiler and destination facts, tested on output samples written from the tools'
 * documented formats (test/fixtures/freebsd; no FreeBSD host exists here). The profiler runs
 * against a scripted Executor that records the exact argv it is sent and replays the samples.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  FreeBsdParseError,
  interpretKdump,
  parseIpcs,
  parseKdumpRecords,
  parseProcstatArgs,
  parseProcstatBinary,
  parseProcstatFiles,
  parseProcstatVm,
  parsePs,
  parseSockstat,
  parseStat,
  parseUnameSrm,
} from '../../src/profilers/freebsd-parsers.js';
import { createFreeBsdProfiler, ktraceArgv, PS_ARGV } from '../../src/profilers/freebsd.js';
import {
  detectFreeBsdHostFacts,
  FACT_COMMANDS,
  factsFromOutputs,
  parseSysctlInteger,
  parseUnameRelease,
} from '../../src/platforms/freebsd-facts.js';
import { FIXTURES, key, MARK, type Reply, sample, scripted } from './freebsd-scripted.js';

function expectParseError(e: unknown, command: string, lineNumber?: number): void {
  expect(e).toBeInstanceOf(FreeBsdParseError);
  const pe = e as FreeBsdParseError;
  expect(pe.code).toBe('PARSE_FAILED');
  expect(pe.command).toBe(command);
  expect(pe.message).toContain(command);
  if (lineNumber !== undefined) expect(pe.lineNumber).toBe(lineNumber);
}

describe('FreeBSD samples', () => {
  it('every sample says it was written from documentation, not captured', () => {
    const names = readdirSync(FIXTURES).filter((n) => n.endsWith('.txt'));
    expect(names.length).toBeGreaterThanOrEqual(15);
    for (const name of names) {
      const first = readFileSync(join(FIXTURES, name), 'utf8').split('\n')[0]!;
      expect(first.startsWith(MARK), name).toBe(true);
      expect(first, name).toContain('NOT captured from a real host');
    }
  });
});

describe('FreeBSD parsers', () => {
  it('uname -srm: FreeBSD accepted, anything else refused with the line', () => {
    expect(parseUnameSrm(sample('uname-srm.txt'))._unsafeUnwrap()).toEqual({ sysname: 'FreeBSD', release: '13.2-RELEASE', machine: 'amd64' });
    const linux = parseUnameSrm('Linux 6.1.0-18-amd64 x86_64\n');
    expectParseError(linux._unsafeUnwrapErr(), 'uname -srm', 1);
    expect(linux._unsafeUnwrapErr().message).toContain('Linux');
  });

  it('ps: five columns per process', () => {
    const ps = parsePs(sample('ps.txt'))._unsafeUnwrap();
    expect(ps).toHaveLength(6);
    expect(ps.find((p) => p.pid === 4243)).toEqual({ pid: 4243, ppid: 4242, ruid: 80, rgid: 80, ruser: 'www' });
    expectParseError(parsePs('  PID  PPID\n')._unsafeUnwrapErr(), PS_ARGV.join(' '), 1);
  });

  it('procstat -b and -c', () => {
    const bins = parseProcstatBinary(sample('procstat-b.txt'))._unsafeUnwrap();
    expect(bins).toEqual([
      { pid: 4242, comm: 'apserver', osrel: 1302001, path: '/usr/local/bin/apserver' },
      { pid: 4243, comm: 'apserver', osrel: 1302001, path: '/usr/local/bin/apserver' },
    ]);
    const args = parseProcstatArgs(sample('procstat-c.txt'), new Map([[4242, 'apserver']]))._unsafeUnwrap();
    expect(args.get(4242)).toEqual(['/usr/local/bin/apserver', '-f', '/usr/local/etc/apserver.conf']);
    // A command name with a space is cut off exactly when procstat -b told us the name.
    const spaced = parseProcstatArgs('  PID COMM             ARGS\n  77 my daemon        /opt/d --x\n', new Map([[77, 'my daemon']]))._unsafeUnwrap();
    expect(spaced.get(77)).toEqual(['/opt/d', '--x']);
    expectParseError(parseProcstatBinary('  PID COMM OSREL\n')._unsafeUnwrapErr(), 'procstat -b', 1);
  });

  it('procstat -f: descriptors, cwd/text, flags, sockets and names with spaces', () => {
    const rows = parseProcstatFiles(sample('procstat-f.txt'))._unsafeUnwrap();
    expect(rows).toHaveLength(22);
    expect(rows[0]).toMatchObject({ pid: 4242, fd: 'text', type: 'vnode', vnodeType: 'regular', name: '/usr/local/bin/apserver' });
    expect(rows.find((r) => r.fd === 'cwd' && r.pid === 4242)).toMatchObject({ vnodeType: 'directory', name: '/var/db/apserver' });
    expect(rows.find((r) => r.name === '/var/log/apserver.log')).toMatchObject({ fd: 4, read: false, write: true, append: true });
    expect(rows.find((r) => r.fd === 8 && r.pid === 4242)).toMatchObject({ type: 'socket', protocol: 'TCP', name: '0.0.0.0:8080 0.0.0.0:0' });
    expect(rows.find((r) => r.type === 'shm')).toMatchObject({ name: '/apserver-shm' });
    expect(rows.find((r) => r.type === 'pipe')!.name).toBeUndefined();
    expect(rows.find((r) => r.pid === 4243 && r.fd === 5)!.name).toBe('/var/spool/apserver/job 1.txt');
    const spacedComm = parseProcstatFiles(
      '  PID COMM                FD T V FLAGS    REF  OFFSET PRO NAME\n 9 my daemon             3 v r r-------   1       0 -   /etc/x\n',
    )._unsafeUnwrap();
    expect(spacedComm[0]).toMatchObject({ comm: 'my daemon', fd: 3, name: '/etc/x' });
  });

  it('procstat -f refuses an unknown header (e.g. -C capabilities) and a malformed row, naming the line', () => {
    const capability = parseProcstatFiles('  PID COMM                FD T FLAGS    CAPABILITIES PRO NAME\n');
    expectParseError(capability._unsafeUnwrapErr(), 'procstat -f', 1);
    const text = sample('procstat-f.txt').replace('r------- ', 'rX------ ');
    const bad = parseProcstatFiles(text)._unsafeUnwrapErr();
    expectParseError(bad, 'procstat -f', 2);
    expect(bad.line).toContain('rX------');
  });

  it('procstat -v: mappings with protection, object type and path; the older FL header too', () => {
    const maps = parseProcstatVm(sample('procstat-v.txt'))._unsafeUnwrap();
    expect(maps).toHaveLength(17);
    const libc = maps.find((m) => m.path === '/lib/libc.so.7' && m.exec && m.pid === 4242)!;
    expect(libc).toMatchObject({ read: true, write: false, objectType: 'vn', start: 0x80024b000n, end: 0x80036a000n });
    expect(maps.filter((m) => m.objectType === 'gd')).toHaveLength(1);
    const old = parseProcstatVm('  PID      START        END PRT  RES PRES REF SHD FL TP PATH\n 5 0x8048000 0x804a000 r-x    2    0   1   0 CN vn /bin/cat\n');
    expect(old._unsafeUnwrap()[0]).toMatchObject({ pid: 5, exec: true, path: '/bin/cat' });
    const unknownType = sample('procstat-v.txt').replace(' sw ', ' zz ');
    expectParseError(parseProcstatVm(unknownType)._unsafeUnwrapErr(), 'procstat -v', 12);
  });

  it('sockstat -l / -c: inet (IPv6 without brackets), unix paths and peers', () => {
    const l = parseSockstat(sample('sockstat-l.txt'), 'sockstat -l')._unsafeUnwrap();
    expect(l).toHaveLength(9);
    expect(l[0]).toMatchObject({ user: 'www', pid: 4242, fd: 8, family: 'inet', protocol: 'tcp', localPort: 8080 });
    expect(l[0]!.localAddress).toBeUndefined();
    expect(l.find((s) => s.proto === 'udp6')).toMatchObject({ family: 'inet6', localAddress: '::1', localPort: 5353 });
    expect(l.find((s) => s.path === '/var/run/apserver.sock')).toMatchObject({ family: 'unix', protocol: 'stream', pid: 4242 });
    expect(l.find((s) => s.proto === 'seqpac')).toMatchObject({ protocol: 'seqpacket' });
    expect(l.at(-1)).toMatchObject({ user: '?', family: 'unix', protocol: 'stream' });
    expect(l.at(-1)!.pid).toBeUndefined();
    expect(l.at(-1)!.path).toBeUndefined();
    const c = parseSockstat(sample('sockstat-c.txt'), 'sockstat -c')._unsafeUnwrap();
    expect(c.find((s) => s.pid === 4243 && s.fd === 6)).toMatchObject({ localAddress: '2001:db8::10', localPort: 40200, remoteAddress: '2001:db8::53', remotePort: 5432 });
    expect(c.find((s) => s.pid === 4242 && s.fd === 13)).toMatchObject({ peerPath: '/var/run/logpriv' });
    expect(c.find((s) => s.pid === 601)).toMatchObject({ path: '/var/run/logpriv' });
  });

  it('sockstat refuses extra columns and unknown protocols', () => {
    const withState = 'USER     COMMAND    PID   FD  PROTO  LOCAL ADDRESS         FOREIGN ADDRESS       PATH STATE   CONN STATE\n';
    expectParseError(parseSockstat(withState, 'sockstat -s')._unsafeUnwrapErr(), 'sockstat -s', 1);
    const header = sample('sockstat-l.txt').split('\n')[0]!;
    const bad = parseSockstat(`${header}\nwww      apserver    4242 8   quic4  *:443                 *:*\n`, 'sockstat -l')._unsafeUnwrapErr();
    expectParseError(bad, 'sockstat -l', 2);
    expect(bad.line).toContain('quic4');
  });

  it('ipcs -a: queues, segments and semaphores with keys, ids, sizes and pids', () => {
    const entries = parseIpcs(sample('ipcs-a.txt'))._unsafeUnwrap();
    expect(entries).toHaveLength(6);
    expect(entries.find((e) => e.kind === 'sysv-shm' && e.id === 131072)).toEqual({
      kind: 'sysv-shm', id: 131072, key: 305419896, owner: 'www', creator: 'www', size: 65536, pids: [4242, 4243],
    });
    expect(entries.find((e) => e.kind === 'sysv-msg' && e.id === 65536)!.pids).toEqual([4243, 4242]);
    expect(entries.find((e) => e.kind === 'sysv-sem' && e.id === 65537)).toMatchObject({ nsems: 17, creator: 'postgres', pids: [] });
    // A row whose fields do not line up with the header (e.g. old ipcs gluing times to pids) is refused.
    const glued = sample('ipcs-a.txt').replace('4243         4242  9:41:07', '4243         42429:41:07');
    expectParseError(parseIpcs(glued)._unsafeUnwrapErr(), 'ipcs -a', 3);
    expectParseError(parseIpcs('T ID KEY\n')._unsafeUnwrapErr(), 'ipcs -a', 1);
  });

  it('stat -f: size, type from the mode string, path with spaces', () => {
    const st = parseStat(sample('stat-attach.txt'))._unsafeUnwrap();
    expect(st.find((s) => s.path === '/var/run/apserver.fifo')).toEqual({ path: '/var/run/apserver.fifo', size: 0, kind: 'fifo' });
    expect(parseStat('12 -rw-r--r--  /a b\n')._unsafeUnwrap()[0]).toEqual({ path: '/a b', size: 12, kind: 'regular' });
    expectParseError(parseStat('stat: /x: No such file\n')._unsafeUnwrapErr(), "stat -f '%z %Sp %N'", 1);
  });
});

describe('kdump trace interpretation', () => {
  const records = () => parseKdumpRecords(sample('kdump.txt'))._unsafeUnwrap();

  it('reads every record with pid, thread id, command and type', () => {
    const r = records();
    expect(r[0]).toMatchObject({ pid: 5100, tid: 100200, comm: 'ktrace', type: 'RET' });
    expect(r.filter((x) => x.type === 'PSIG')).toHaveLength(1);
    expect(new Set(r.map((x) => x.tid))).toEqual(new Set([100200, 100202, 100301]));
  });

  it('finds files, sockets, SysV IPC and the process tree; failed calls are not uses', () => {
    const o = interpretKdump(records(), '/var/db/apserver')._unsafeUnwrap();
    expect(o.executable).toBe('/usr/local/bin/apserver');
    const access = (p: string) => [...(o.files.get(p)?.access ?? [])].sort();
    expect(access('/usr/local/etc/apserver.conf')).toEqual(['read']);
    // Relative path opened while another thread was inside a call: resolved against the start directory.
    expect(access('/var/db/apserver/apserver.pid')).toEqual(['write']);
    expect(access('/usr/share/zoneinfo/UTC')).toEqual(['read']);
    // After chdir, relative paths resolve against the new directory; O_CREAT|O_EXCL means created.
    expect(o.files.get('/var/spool/apserver/job.tmp')).toMatchObject({ created: true });
    expect(access('/var/spool/apserver/job.tmp')).toEqual(['read', 'write']);
    expect(o.files.get('/var/run/apserver.fifo')).toMatchObject({ kindHint: 'fifo', created: true });
    expect(o.files.get('/libexec/ld-elf.so.1')).toMatchObject({ sharedLibrary: true });
    expect(o.files.get('/lib/libc.so.7')).toMatchObject({ sharedLibrary: true });
    expect(access('/var/log/apserver.log')).toEqual(['write']);
    expect(access('/bin/sh')).toEqual(['exec']);
    expect(o.files.has('/nonexistent/apserver.conf')).toBe(false);
    expect(o.files.has('/bin/nosuch')).toBe(false);
    // Failed lookups are probes, never uses; every traced use says so.
    expect(o.probes).toEqual(expect.arrayContaining(['/nonexistent/apserver.conf', '/bin/nosuch']));
    expect([...(o.files.get('/usr/local/etc/apserver.conf')?.reasons ?? [])]).toEqual(['traced']);
    expect(o.notes.join(' ')).toContain('could not be resolved');

    expect(o.sockets).toEqual([
      { family: 'inet', protocol: 'tcp', localAddress: '0.0.0.0', localPort: 8080, listening: true },
      { family: 'inet6', protocol: 'udp', remoteAddress: '2001:db8::53', remotePort: 53, listening: false },
      { family: 'inet', protocol: 'tcp', remoteAddress: '192.0.2.20', remotePort: 5432, listening: false },
      { family: 'unix-path', protocol: 'stream', path: '/var/run/apserver.sock', listening: true },
    ]);
    expect(o.ipc).toEqual([
      { kind: 'sysv-shm', key: 305419896, id: 131072, size: 65536 },
      { kind: 'sysv-shm', id: 131072 },
      { kind: 'sysv-sem', key: 305419897, id: 65536 },
      // 0xdeadbeef printed as an unsigned register comes back as ipcs' signed key.
      { kind: 'sysv-msg', key: -559038737, id: 65536 },
    ]);
    expect(o.processes).toEqual([
      { pid: 5100, executable: '/usr/local/bin/apserver' },
      { pid: 5101, ppid: 5100, executable: '/bin/sh' },
    ]);
  });

  it('refuses records it does not understand, naming the line', () => {
    const noTid = parseKdumpRecords('  5100 apserver CALL  openat(-100,1,0)\n')._unsafeUnwrapErr();
    expectParseError(noTid, 'kdump -H -n -d', 1);
    const translated = parseKdumpRecords('  5100 100200 apserver CALL  openat(AT_FDCWD,0x800,0x100000<O_RDONLY|O_CLOEXEC>)\n')._unsafeUnwrap();
    expectParseError(interpretKdump(translated, '/')._unsafeUnwrapErr(), 'kdump -H -n -d', 1);
    const mismatch = parseKdumpRecords('  5100 100200 apserver CALL  close(3)\n  5100 100200 apserver RET   open 3\n')._unsafeUnwrap();
    expectParseError(interpretKdump(mismatch, '/')._unsafeUnwrapErr(), 'kdump -H -n -d', 2);
    const orphanNami = parseKdumpRecords('  5100 100200 apserver NAMI  "/etc/passwd"\n')._unsafeUnwrap();
    expectParseError(interpretKdump(orphanNami, '/')._unsafeUnwrapErr(), 'kdump -H -n -d', 1);
  });
});

describe('FreeBSD destination facts', () => {
  const present = (v: string) => ({ code: 0, stdout: v, stderr: '' });
  const missing = (oid: string) => ({ code: 1, stdout: '', stderr: `sysctl: unknown oid '${oid}'\n` });

  it('parses uname -r releases and refuses others', () => {
    expect(parseUnameRelease(sample('uname-r-13.2.txt'))._unsafeUnwrap()).toEqual({ release: '13.2-RELEASE-p4', major: 13, minor: 2 });
    expect(parseUnameRelease(sample('uname-r-10.3.txt'))._unsafeUnwrap()).toMatchObject({ major: 10, minor: 3 });
    expect(parseUnameRelease(sample('uname-r-9.2.txt'))._unsafeUnwrap()).toMatchObject({ major: 9, minor: 2 });
    expectParseError(parseUnameRelease('6.1.0-18-amd64\n')._unsafeUnwrapErr(), 'uname -r', 1);
  });

  it('sysctl: a value, an unknown oid (missing parameter), or an error', () => {
    expect(parseSysctlInteger('security.jail.param.sysvshm', present(sample('sysctl-param-present.txt')))._unsafeUnwrap()).toEqual({ present: true, value: 0 });
    const stderr = sample('sysctl-unknown-oid.stderr.txt');
    expect(parseSysctlInteger('security.jail.param.sysvshm', { code: 1, stdout: '', stderr })._unsafeUnwrap()).toEqual({ present: false });
    // "unknown oid" about another oid, or a failure without it, is not "missing".
    expectParseError(parseSysctlInteger('kern.features.vimage', { code: 1, stdout: '', stderr })._unsafeUnwrapErr(), 'sysctl -n kern.features.vimage');
    expectParseError(parseSysctlInteger('kern.features.vimage', { code: 1, stdout: '', stderr: 'sysctl: Operation not permitted' })._unsafeUnwrapErr(), 'sysctl -n kern.features.vimage');
    expectParseError(parseSysctlInteger('kern.features.vimage', present('yes\n'))._unsafeUnwrapErr(), 'sysctl -n kern.features.vimage');
  });

  it('assembles FreeBsdHostFacts for a 13.2 host with VIMAGE and a 10.3 host without SysV jail params', () => {
    const facts13 = factsFromOutputs({
      uname: sample('uname-r-13.2.txt'),
      sysvParams: [present('0\n'), present('0\n'), present('0\n')],
      vimage: present(sample('sysctl-vimage-present.txt')),
    })._unsafeUnwrap();
    expect(facts13).toEqual({ release: '13.2-RELEASE-p4', major: 13, minor: 2, sysvIpcJailParams: true, vnet: true });
    const facts10 = factsFromOutputs({
      uname: sample('uname-r-10.3.txt'),
      sysvParams: [missing('security.jail.param.sysvshm'), missing('security.jail.param.sysvsem'), missing('security.jail.param.sysvmsg')],
      vimage: missing('kern.features.vimage'),
    })._unsafeUnwrap();
    expect(facts10).toEqual({ release: '10.3-RELEASE', major: 10, minor: 3, sysvIpcJailParams: false, vnet: false });
  });

  it('detectFreeBsdHostFacts sends exactly uname -r and four sysctl -n', async () => {
    const ex = scripted({
      [key('uname', '-r')]: { stdout: '9.2-RELEASE\n' },
      [key('sysctl', '-n', 'security.jail.param.sysvshm')]: missing('security.jail.param.sysvshm'),
      [key('sysctl', '-n', 'security.jail.param.sysvsem')]: missing('security.jail.param.sysvsem'),
      [key('sysctl', '-n', 'security.jail.param.sysvmsg')]: missing('security.jail.param.sysvmsg'),
      [key('sysctl', '-n', 'kern.features.vimage')]: missing('kern.features.vimage'),
    });
    const facts = (await detectFreeBsdHostFacts(ex))._unsafeUnwrap();
    expect(facts).toEqual({ release: '9.2-RELEASE', major: 9, minor: 2, sysvIpcJailParams: false, vnet: false });
    expect(ex.calls).toEqual(FACT_COMMANDS.map((c) => [...c]));
    expect(ex.calls[0]).toEqual(['uname', '-r']);
  });

  it('detectFreeBsdHostFacts on a Linux host is a PARSE_FAILED error naming uname -r', async () => {
    const ex = scripted({ [key('uname', '-r')]: { stdout: '6.1.0-18-amd64\n' } });
    const e = (await detectFreeBsdHostFacts(ex))._unsafeUnwrapErr();
    expectParseError(e, 'uname -r');
    expect(ex.calls).toEqual([['uname', '-r']]);
  });
});

/** Replies for attaching to pid 4242 on the sample host. */
function attachReplies(): Record<string, Reply> {
  return {
    [key('uname', '-srm')]: { stdout: sample('uname-srm.txt') },
    [JSON.stringify(PS_ARGV)]: { stdout: sample('ps.txt') },
    [key('procstat', '-b', '4242', '4243')]: { stdout: sample('procstat-b.txt') },
    [key('procstat', '-c', '4242')]: { stdout: sample('procstat-c.txt') },
    [key('procstat', '-f', '4242', '4243')]: { stdout: sample('procstat-f.txt') },
    [key('procstat', '-v', '4242', '4243')]: { stdout: sample('procstat-v.txt') },
    [key('sockstat', '-l')]: { stdout: sample('sockstat-l.txt') },
    [key('sockstat', '-c')]: { stdout: sample('sockstat-c.txt') },
    [key('ipcs', '-a')]: { stdout: sample('ipcs-a.txt') },
    [key('stat', '-f', '%z %Sp %N', ...ATTACH_STAT_PATHS)]: {
      code: 1,
      stdout: sample('stat-attach.txt'),
      stderr: 'stat: /var/spool/apserver/job 1.txt: stat: No such file or directory\n',
    },
  };
}
const ATTACH_STAT_PATHS = [
  '/lib/libc.so.7',
  '/libexec/ld-elf.so.1',
  '/usr/local/bin/apserver',
  '/usr/local/etc/apserver.conf',
  '/usr/local/lib/libevent-2.1.so.7',
  '/usr/share/locale/C.UTF-8/LC_CTYPE',
  '/var/db/apserver/state.db',
  '/var/log/apserver.log',
  '/var/run/apserver.fifo',
  '/var/spool/apserver/job 1.txt',
];

describe('FreeBSD profiler over a scripted executor', () => {
  it('attach: sends exactly the documented commands and builds the profile', async () => {
    const ex = scripted(attachReplies());
    const progress: number[] = [];
    const profile = (await createFreeBsdProfiler({ executor: ex }).profile({ pid: 4242 }, { onProgress: (p) => progress.push(p.events) }))._unsafeUnwrap();
    expect(ex.calls).toEqual([
      ['uname', '-srm'],
      [...PS_ARGV],
      ['procstat', '-b', '4242', '4243'],
      ['procstat', '-c', '4242'],
      ['procstat', '-f', '4242', '4243'],
      ['procstat', '-v', '4242', '4243'],
      ['sockstat', '-l'],
      ['sockstat', '-c'],
      ['ipcs', '-a'],
      ['stat', '-f', '%z %Sp %N', ...ATTACH_STAT_PATHS],
    ]);
    expect(progress.length).toBe(1);
    expect(progress[0]).toBeGreaterThan(0);

    expect(profile).toMatchObject({
      executable: '/usr/local/bin/apserver',
      executableSize: 58416,
      argv: ['/usr/local/bin/apserver', '-f', '/usr/local/etc/apserver.conf'],
      cwd: '/var/db/apserver',
      uid: 80,
      gid: 80,
      platform: { os: 'freebsd', release: '13.2-RELEASE', arch: 'amd64' },
      completeness: { complete: false },
      profiler: { name: 'freebsd' },
    });
    const file = (p: string) => profile.files.find((f) => f.path === p);
    expect(file('/usr/local/etc/apserver.conf')).toEqual({ path: '/usr/local/etc/apserver.conf', kind: 'regular', access: ['read'], size: 812, sharedLibrary: false, created: false, reasons: ['held-open'] });
    // procstat -v mappings and the text vnode are 'mapped'.
    expect(file('/lib/libc.so.7')?.reasons).toEqual(['mapped']);
    expect(file('/usr/local/bin/apserver')?.reasons).toContain('mapped');
    expect(file('/var/log/apserver.log')).toMatchObject({ access: ['write'], size: 20480 });
    expect(file('/var/db/apserver/state.db')).toMatchObject({ access: ['read', 'write'], size: 98304 });
    expect(file('/var/run/apserver.fifo')).toMatchObject({ kind: 'fifo', size: 0 });
    expect(file('/lib/libc.so.7')).toMatchObject({ sharedLibrary: true, size: 1962216 });
    expect(file('/usr/local/lib/libevent-2.1.so.7')).toMatchObject({ sharedLibrary: true, access: ['exec'] });
    expect(file('/usr/local/bin/apserver')).toMatchObject({ sharedLibrary: false });
    expect(file('/usr/share/locale/C.UTF-8/LC_CTYPE')).toMatchObject({ access: ['read'], sharedLibrary: false });
    // Gone when stat ran and written: the program's own temporary file.
    expect(file('/var/spool/apserver/job 1.txt')).toMatchObject({ kind: 'regular', created: true, size: 0 });
    expect(file('/dev/pts/0')).toBeUndefined();
    expect(profile.files.some((f) => f.path.startsWith('/usr/sbin'))).toBe(false);

    expect(profile.sockets).toEqual([
      { family: 'inet', protocol: 'tcp', localAddress: '0.0.0.0', localPort: 8080, listening: true },
      { family: 'inet6', protocol: 'udp', localAddress: '::1', localPort: 5353, listening: false },
      { family: 'unix-path', protocol: 'stream', path: '/var/run/apserver.sock', listening: true },
      { family: 'inet', protocol: 'tcp', localAddress: '192.0.2.10', localPort: 8080, remoteAddress: '198.51.100.7', remotePort: 51234, listening: false },
      { family: 'inet6', protocol: 'tcp', localAddress: '2001:db8::10', localPort: 40200, remoteAddress: '2001:db8::53', remotePort: 5432, listening: false },
      { family: 'unix-path', protocol: 'dgram', path: '/var/run/logpriv', listening: false },
    ]);
    expect(profile.ipc).toEqual([
      { kind: 'posix-shm', name: '/apserver-shm' },
      { kind: 'sysv-msg', key: 1094795585, id: 65536 },
      { kind: 'sysv-shm', key: 305419896, id: 131072, size: 65536 },
      { kind: 'sysv-sem', key: 305419897, id: 65536 },
    ]);
    // Other users' objects (postgres, root) are not the program's.
    expect(profile.ipc.some((i) => i.key === 7 || i.id === 131073)).toBe(false);
    // Real ids per process, from ps.
    expect(profile.processes).toEqual([
      { pid: 4242, ppid: 1, uid: 80, gid: 80, executable: '/usr/local/bin/apserver', argv: ['/usr/local/bin/apserver', '-f', '/usr/local/etc/apserver.conf'] },
      { pid: 4243, ppid: 4242, uid: 80, gid: 80, executable: '/usr/local/bin/apserver' },
    ]);
    expect(profile.completeness.notes.join(' ')).toMatch(/snapshot/);
    expect(profile.completeness.notes.join(' ')).toMatch(/semaphore sets were attributed/);
  });

  it('launch: ktrace under timeout with the caller cwd/env, kdump, stat, and the trace removed', async () => {
    const traceFile = '/tmp/ap-migrate-ktrace.Ab12Cd';
    const command = ['apserver', '-f', '/usr/local/etc/apserver.conf'];
    const launchArgv = ktraceArgv(traceFile, command, 2500);
    expect(launchArgv).toEqual(['timeout', '-s', 'TERM', '3', 'ktrace', '-i', '-f', traceFile, '-t', 'cnst', '--', ...command]);
    const statPaths = [
      '/bin/sh', '/etc/libmap.conf', '/lib/libc.so.7', '/lib/libedit.so.8', '/libexec/ld-elf.so.1', '/usr/local/bin/apserver',
      '/usr/local/etc/apserver.conf', '/usr/local/lib/libevent-2.1.so.7', '/usr/share/zoneinfo/UTC', '/var/db/apserver/apserver.pid',
      '/var/log/apserver.log', '/var/run/apserver.fifo', '/var/run/ld-elf.so.hints', '/var/spool/apserver/job.tmp',
    ];
    const ex = scripted({
      [key('uname', '-srm')]: { stdout: sample('uname-srm.txt') },
      [key('id', '-u')]: { stdout: '80\n' },
      [key('id', '-g')]: { stdout: '80\n' },
      [key('mktemp', '-t', 'ap-migrate-ktrace')]: { stdout: `${traceFile}\n` },
      [JSON.stringify(launchArgv)]: { code: 124, stderr: '' },
      [key('kdump', '-H', '-n', '-d', '-f', traceFile)]: { stdout: sample('kdump.txt') },
      [key('stat', '-f', '%z %Sp %N', ...statPaths)]: { stdout: '58416 -rwxr-xr-x /usr/local/bin/apserver\n812 -rw-r--r-- /usr/local/etc/apserver.conf\n0 prw-r----- /var/run/apserver.fifo\n', code: 1 },
      [key('rm', '-f', traceFile)]: {},
    });
    const profile = (
      await createFreeBsdProfiler({ executor: ex }).profile({ command, cwd: '/var/db/apserver', env: { APSERVER_MODE: 'test' } }, { durationMs: 2500 })
    )._unsafeUnwrap();
    expect(ex.calls).toEqual([
      ['uname', '-srm'],
      ['id', '-u'],
      ['id', '-g'],
      ['mktemp', '-t', 'ap-migrate-ktrace'],
      launchArgv,
      ['kdump', '-H', '-n', '-d', '-f', traceFile],
      ['stat', '-f', '%z %Sp %N', ...statPaths],
      ['rm', '-f', traceFile],
    ]);
    const launchOptions = ex.options[4]!;
    expect(launchOptions).toMatchObject({ cwd: '/var/db/apserver', env: { APSERVER_MODE: 'test' }, allowNonZeroExit: true });
    expect(profile).toMatchObject({ executable: '/usr/local/bin/apserver', executableSize: 58416, argv: command, cwd: '/var/db/apserver', env: { APSERVER_MODE: 'test' }, completeness: { complete: false } });
    // ktrace under timeout(1) exited 124: the duration ran out and the program was stopped, so it is not a complete run.
    expect(profile.completeness.notes.join(' ')).toContain('was stopped');
    expect(profile.files.find((f) => f.path === '/var/run/apserver.fifo')).toMatchObject({ kind: 'fifo', reasons: ['traced'] });
    // The failed open and exec of the trace are probes, not files.
    expect(profile.probes).toEqual(expect.arrayContaining(['/bin/nosuch', '/nonexistent/apserver.conf']));
    expect(profile.files.some((f) => profile.probes.includes(f.path))).toBe(false);
    expect(profile.sockets.filter((s) => s.listening).map((s) => s.localPort ?? s.path)).toEqual([8080, '/var/run/apserver.sock']);
    expect(profile.ipc.map((i) => i.kind).sort()).toEqual(['sysv-msg', 'sysv-sem', 'sysv-shm']);
    expect(profile.ipc.find((i) => i.kind === 'sysv-shm')).toEqual({ kind: 'sysv-shm', key: 305419896, id: 131072, size: 65536 });
    expect(profile.processes.map((p) => p.pid)).toEqual([5100, 5101]);
  });

  it('launch: a program that does not exist is LAUNCH_FAILED and the trace file is still removed', async () => {
    const traceFile = '/tmp/ap-migrate-ktrace.Zz';
    const ex = scripted({
      [key('uname', '-srm')]: { stdout: 'FreeBSD 14.1-RELEASE amd64\n' },
      [key('id', '-u')]: { stdout: '0\n' },
      [key('id', '-g')]: { stdout: '0\n' },
      [key('mktemp', '-t', 'ap-migrate-ktrace')]: { stdout: `${traceFile}\n` },
      [JSON.stringify(ktraceArgv(traceFile, ['nosuch']))]: { code: 1, stderr: "ktrace: exec of 'nosuch' failed: No such file or directory\n" },
      [key('rm', '-f', traceFile)]: {},
    });
    const e = (await createFreeBsdProfiler({ executor: ex }).profile({ command: ['nosuch'] }))._unsafeUnwrapErr();
    expect(e.code).toBe('LAUNCH_FAILED');
    expect(e.message).toContain('nosuch');
    expect(ex.calls.at(-1)).toEqual(['rm', '-f', traceFile]);
  });

  it('attach: a pid that does not exist is NO_SUCH_PROCESS after ps, nothing else is run', async () => {
    const ex = scripted(attachReplies());
    const e = (await createFreeBsdProfiler({ executor: ex }).profile({ pid: 999999 }))._unsafeUnwrapErr();
    expect(e.code).toBe('NO_SUCH_PROCESS');
    expect(e.message).toContain('999999');
    expect(ex.calls).toEqual([['uname', '-srm'], [...PS_ARGV]]);
  });

  it('attach: malformed procstat -f output is PARSE_FAILED naming the command and line', async () => {
    const replies = attachReplies();
    replies[key('procstat', '-f', '4242', '4243')] = { stdout: sample('procstat-f.txt').replace(' 4242 apserver             3 v', ' 4242 apserver             3 Q') };
    const e = (await createFreeBsdProfiler({ executor: scripted(replies) }).profile({ pid: 4242 }))._unsafeUnwrapErr();
    expectParseError(e, 'procstat -f', 9);
  });

  it('attach: procstat refused is PERMISSION_DENIED; a kernel without SysV IPC is a note, not an error', async () => {
    const denied = attachReplies();
    denied[key('procstat', '-f', '4242', '4243')] = { code: 1, stderr: 'procstat: procstat_getfiles: Operation not permitted\n' };
    const e = (await createFreeBsdProfiler({ executor: scripted(denied) }).profile({ pid: 4242 }))._unsafeUnwrapErr();
    expect(e.code).toBe('PERMISSION_DENIED');

    const noIpc = attachReplies();
    noIpc[key('ipcs', '-a')] = { code: 1, stderr: 'ipcs: sysctlbyname: kern.ipc.msqids: No such file or directory\n' };
    const profile = (await createFreeBsdProfiler({ executor: scripted(noIpc) }).profile({ pid: 4242 }))._unsafeUnwrap();
    expect(profile.ipc).toEqual([{ kind: 'posix-shm', name: '/apserver-shm' }]);
    expect(profile.completeness.notes.join(' ')).toContain('no SysV IPC');
  });

  it('bad input is INVALID_INPUT before any command runs', async () => {
    const ex = scripted({});
    const p = createFreeBsdProfiler({ executor: ex });
    expect((await p.profile({ pid: -3 }))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect((await p.profile({ command: [] }))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect((await p.profile({ command: ['x'], cwd: 'relative' }))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect(ex.calls).toEqual([]);
  });

  it('availability: unavailable on Linux or with tools missing, with the reason', async () => {
    const linux = scripted({ [key('uname', '-srm')]: { stdout: 'Linux 6.1.0-18-amd64 x86_64\n' } });
    const a = await createFreeBsdProfiler({ executor: linux }).availability();
    expect(a).toMatchObject({ name: 'freebsd', available: false });
    expect(a.reason).toContain('Linux');
    const noKtrace = scripted({
      [key('uname', '-srm')]: { stdout: 'FreeBSD 13.2-RELEASE amd64\n' },
      [key('which', 'procstat', 'sockstat', 'ipcs', 'ktrace', 'kdump', 'ps', 'stat')]: {
        code: 1,
        stdout: '/usr/bin/procstat\n/usr/bin/sockstat\n/usr/bin/ipcs\n/bin/ps\n/usr/bin/stat\n',
      },
    });
    const b = await createFreeBsdProfiler({ executor: noKtrace }).availability();
    expect(b.available).toBe(false);
    expect(b.reason).toContain('ktrace, kdump');
  });
});
