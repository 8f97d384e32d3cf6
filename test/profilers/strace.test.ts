import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProfileCollector } from '../../src/profilers/common.js';
import { createStraceProfiler, StraceInterpreter } from '../../src/profilers/strace.js';
import {
  parseCallText,
  parseQuoted,
  parseSockaddr,
  parseSocketDecoration,
  splitArgs,
  StraceLineParser,
  unescapeC,
} from '../../src/profilers/strace-parser.js';
import { runProfilerConformance } from '../conformance/profiler-suite.js';
import { fixtureBinary } from '../helpers/fixtures.js';
import { skipUnless } from '../helpers/requirements.js';
import { expectLookupsProfile, lookupsSite } from './lookups-check.js';
import { expectSoundNginxProfile, NGINX, nginxSite } from './nginx-daemon.js';

runProfilerConformance('strace', () => createStraceProfiler(), {
  requirements: ['root', 'tool:strace', 'tool:gcc', 'tool:ipcs'],
  completeWhenLaunched: true,
});

describe('strace output parser', () => {
  it('reads quoted strings with every kind of escape', () => {
    expect(parseQuoted('"/tmp/we\\"ird, na>me\\n.txt"')).toBe('/tmp/we"ird, na>me\n.txt');
    expect(parseQuoted('"tab\\there\\\\"')).toBe('tab\there\\');
    expect(parseQuoted('"\\x41\\102\\303\\251"')).toBe('ABé');
    expect(parseQuoted('"truncated"...')).toBe('truncated');
    expect(parseQuoted('NULL')).toBeUndefined();
    expect(unescapeC('a\\76b')).toBe('a>b');
  });

  it('splits arguments without breaking quoted commas, structures or decorations', () => {
    expect(splitArgs('AT_FDCWD</a, b>, "x, y", O_RDONLY')).toEqual(['AT_FDCWD</a, b>', '"x, y"', 'O_RDONLY']);
    expect(splitArgs('3<TCP:[1]>, {sa_family=AF_INET, sin_port=htons(80)}, 16')).toHaveLength(3);
    expect(splitArgs('"/bin/ls", ["ls", "-l"], 0x7ff /* 3 vars */')).toEqual(['"/bin/ls"', '["ls", "-l"]', '0x7ff /* 3 vars */']);
  });

  it('parses a successful openat with its -yy decorations', () => {
    const call = parseCallText(7, 'openat(AT_FDCWD</tmp/fxd>, "relative.txt", O_RDWR|O_CREAT, 0644) = 5</tmp/fxd/relative.txt>');
    expect(call).toEqual({
      pid: 7,
      name: 'openat',
      args: ['AT_FDCWD</tmp/fxd>', '"relative.txt"', 'O_RDWR|O_CREAT', '0644'],
      result: '5</tmp/fxd/relative.txt>',
      retval: 5,
      retDecoration: '/tmp/fxd/relative.txt',
    });
  });

  it('keeps a decoration whose path holds ") = " and escaped ">"', () => {
    const call = parseCallText(1, 'openat(AT_FDCWD</x) = 3>, "/tmp/a\\76b) = 9", O_RDONLY) = 4</tmp/a\\76b) = 9>');
    expect(call?.args[1]).toBe('"/tmp/a\\76b) = 9"');
    expect(call?.retDecoration).toBe('/tmp/a>b) = 9');
  });

  it('marks failed calls with their errno', () => {
    const call = parseCallText(1, 'openat(AT_FDCWD</>, "/nope", O_RDONLY) = -1 ENOENT (No such file or directory)');
    expect(call?.errno).toBe('ENOENT');
    expect(call?.retval).toBe(-1);
  });

  it('joins <unfinished ...> and resumed halves per pid, across interleaved pids', () => {
    const parser = new StraceLineParser();
    expect(parser.push('101  connect(4<TCP:[9]>, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("10.0.0.1")}, 16 <unfinished ...>')).toBeUndefined();
    const other = parser.push('102  openat(AT_FDCWD</>, "/etc/hosts", O_RDONLY) = 3</etc/hosts>');
    expect(other?.type === 'call' && other.call.pid).toBe(102);
    const resumed = parser.push('101  <... connect resumed>) = 0');
    expect(resumed?.type === 'call' && resumed.call).toMatchObject({ pid: 101, name: 'connect', retval: 0 });
    expect(resumed?.type === 'call' && resumed.call.args).toHaveLength(3);
    expect(parser.push('101  <... read resumed>) = 0')).toBeUndefined();
    expect(parser.unparsed).toHaveLength(1);
  });

  it('reports exits and skips signals', () => {
    const parser = new StraceLineParser();
    expect(parser.push('5  --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---')).toBeUndefined();
    expect(parser.push('5  +++ exited with 3 +++')).toEqual({ type: 'exit', exit: { pid: 5, code: 3 } });
    expect(parser.push('6  +++ killed by SIGKILL +++')).toEqual({ type: 'exit', exit: { pid: 6, signal: 'SIGKILL' } });
  });

  it('reads socket addresses and decorations', () => {
    expect(parseSockaddr('{sa_family=AF_INET6, sin6_port=htons(45678), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::", &sin6_addr), sin6_scope_id=0}')).toEqual({
      family: 'inet6',
      address: '::',
      port: 45678,
    });
    expect(parseSockaddr('{sa_family=AF_UNIX, sun_path=@"abst"}')).toEqual({ family: 'unix-abstract', path: 'abst' });
    expect(parseSocketDecoration('TCPv6:[[::]:45678]')).toMatchObject({ family: 'inet6', protocol: 'tcp', localAddress: '::', localPort: 45678 });
    expect(parseSocketDecoration('TCP:[127.0.0.1:45123->127.0.0.1:38474]')).toMatchObject({ remoteAddress: '127.0.0.1', remotePort: 38474 });
    expect(parseSocketDecoration('UNIX-STREAM:[14863,"/tmp/u.sock"]')).toMatchObject({ family: 'unix', inode: 14863, path: '/tmp/u.sock' });
    expect(parseSocketDecoration('/etc/passwd')).toBeUndefined();
  });
});

describe('strace interpreter', () => {
  const feed = (lines: string[], cwd = '/start') => {
    const collector = new ProfileCollector();
    const interpreter = new StraceInterpreter(collector, 'first-exec', cwd);
    const parser = new StraceLineParser();
    for (const line of lines) {
      const event = parser.push(line);
      if (event?.type === 'call') interpreter.handle(event.call);
    }
    return { collector, interpreter };
  };

  it('resolves relative paths through chdir, fork and *at descriptors, ignoring failures', async () => {
    const { collector, interpreter } = feed([
      '10  execve("./app", ["./app", "a b"], 0x1 /* 2 vars */) = 0',
      '10  open("rel.txt", O_RDONLY) = 3',
      '10  chdir("sub") = 0',
      '10  clone(child_stack=NULL, flags=SIGCHLD) = 11',
      '11  open("child.txt", O_WRONLY|O_CREAT) = 3',
      '10  openat(5</data>, "at.txt", O_RDWR) = 4</data/at.txt>',
      '10  openat(AT_FDCWD</start/sub>, "../missing", O_RDONLY) = -1 ENOENT (No such file or directory)',
      '10  mq_open("q1", O_RDWR|O_CREAT, 0600, NULL) = 6</q1>',
      '10  shmget(0x1234, 4096, IPC_CREAT|0600) = 65538',
      '10  semget(IPC_PRIVATE, 1, IPC_CREAT|0600) = 3',
    ]);
    expect(interpreter.rootExec).toEqual({ executable: '/start/app', argv: ['./app', 'a b'] });
    // (these paths need not exist: what was recorded is checked before the file system is asked)
    const seen = collector.observed();
    const files = Object.fromEntries(Object.entries(seen.files).map(([p, f]) => [p, f.access]));
    expect(files).toEqual({
      '/start/app': ['exec'],
      '/start/rel.txt': ['read'],
      '/start/sub/child.txt': ['write'],
      '/data/at.txt': ['read', 'write'],
    });
    expect(seen.files['/data/at.txt']?.reasons).toEqual(['traced']);
    // The failed open is a probe, resolved against the AT_FDCWD directory strace printed.
    expect(seen.probes).toEqual(['/start/missing']);
    const built = await collector.build({ executable: '/start/app', argv: ['./app'], cwd: '/start', uid: 0, gid: 0 }, { profiler: 't', complete: true });
    if (built.isErr()) throw built.error;
    expect(built.value.probes).toEqual(['/start/missing']);
    expect(built.value.ipc).toEqual(
      expect.arrayContaining([
        { kind: 'posix-mq', name: '/q1' },
        { kind: 'sysv-shm', key: 0x1234, id: 65538, size: 4096 },
        { kind: 'sysv-sem', key: 0, id: 3 },
      ]),
    );
    expect(built.value.processes).toEqual([
      { pid: 10, executable: '/start/app', argv: ['./app', 'a b'] },
      { pid: 11, ppid: 10 },
    ]);
  });

  it('makes every failed lookup a probe (open, stat, access, exec, unlink, chdir), never a use; EEXIST is neither', () => {
    const { collector } = feed([
      '10  execve("/usr/bin/app", ["app"], 0x1 /* 2 vars */) = 0',
      '10  newfstatat(AT_FDCWD</srv>, "conf.d", 0x7ffd, 0) = -1 ENOENT (No such file or directory)',
      '10  statx(3</etc>, "app.conf", AT_STATX_SYNC_AS_STAT, STATX_ALL, 0x7ffd) = -1 ENOENT (No such file or directory)',
      '10  access("/etc/ld.so.preload", R_OK) = -1 ENOENT (No such file or directory)',
      '10  execve("/usr/local/bin/helper", ["helper"], 0x1 /* 2 vars */) = -1 ENOENT (No such file or directory)',
      '10  unlink("/run/app.sock") = -1 ENOENT (No such file or directory)',
      '10  chdir("/nonexistent") = -1 ENOENT (No such file or directory)',
      '10  open("rel.txt", O_RDONLY) = 3',
      '10  mkdir("/srv/cache", 0755) = -1 EEXIST (File exists)',
      '10  openat(AT_FDCWD</srv>, "busy", O_RDONLY) = ? ERESTARTSYS (To be restarted if SA_RESTART is set)',
      '10  newfstatat(AT_FDCWD</srv>, "present", {st_mode=S_IFREG|0644, st_size=1, ...}, 0) = 0',
    ]);
    const seen = collector.observed();
    expect(seen.probes).toEqual(['/etc/app.conf', '/etc/ld.so.preload', '/nonexistent', '/run/app.sock', '/srv/conf.d', '/usr/local/bin/helper']);
    // The failed chdir left the cwd as it was; a successful stat alone is no use.
    expect(Object.keys(seen.files).sort()).toEqual(['/srv/rel.txt', '/usr/bin/app']);
  });

  it("holds a child's calls printed before its clone returns, and shares a cwd between threads", () => {
    const { collector } = feed(
      [
        '10  execve("/app", ["app"], 0x1 /* 2 vars */) = 0',
        '10  chdir("/srv") = 0',
        '10  clone(child_stack=NULL, flags=SIGCHLD <unfinished ...>',
        '11  open("early.txt", O_RDONLY) = 3',
        '11  chdir("sub") = 0',
        '10  <... clone resumed>) = 11',
        '11  open("late.txt", O_RDONLY) = 4',
        '10  clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, exit_signal=0}, 88) = 12',
        '12  chdir("/var") = 0',
        '10  open("shared.txt", O_RDONLY) = 5',
      ],
      '/start',
    );
    expect(Object.keys(collector.observed().files).sort()).toEqual(['/app', '/srv/early.txt', '/srv/sub/late.txt', '/var/shared.txt']);
  });

  it('never joins a path to a guess: a descriptor strace could not name, a process never seen cloned', async () => {
    const { collector, interpreter } = feed([
      '10  execve("/app", ["app"], 0x1 /* 2 vars */) = 0',
      '10  openat(7<anon_inode:[eventfd]>, "x.conf", O_RDONLY) = 3</etc/x.conf>',
      '10  fchdir(8<socket:[123]>) = 0',
      '10  open("after.txt", O_RDONLY) = 4',
      '99  open("orphan.txt", O_RDONLY) = 3',
      '99  open("/etc/hostname", O_RDONLY) = 4',
    ]);
    interpreter.finish();
    expect(Object.keys(collector.observed().files).sort()).toEqual(['/app', '/etc/hostname']);
    const built = await collector.build({ executable: '/app', argv: ['app'], cwd: '/start', uid: 0, gid: 0 }, { profiler: 't', complete: true });
    expect(built._unsafeUnwrap().completeness.complete).toBe(false);
    expect(built._unsafeUnwrap().completeness.notes.join(' ')).toMatch(/3 relative paths could not be resolved/);
  });

  it('records listening, bound and connected sockets; a connect in progress counts', async () => {
    const { collector } = feed([
      '1  bind(3<TCP:[14542]>, {sa_family=AF_INET, sin_port=htons(8000), sin_addr=inet_addr("0.0.0.0")}, 16) = 0',
      '1  listen(3<TCP:[0.0.0.0:8000]>, 5) = 0',
      '1  connect(4<TCP:[1]>, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("127.0.0.2")}, 16) = -1 EINPROGRESS (Operation now in progress)',
      '1  connect(5<UNIX-STREAM:[2]>, {sa_family=AF_UNIX, sun_path="/run/x.sock"}, 110) = -1 ENOENT (No such file or directory)',
      '1  bind(6<UDP:[3]>, {sa_family=AF_INET, sin_port=htons(5353), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
    ]);
    const built = await collector.build({ executable: '/x', argv: ['x'], cwd: '/', uid: 0, gid: 0 }, { profiler: 't', complete: true });
    if (built.isErr()) throw built.error;
    expect(built.value.sockets).toEqual([
      { family: 'inet', protocol: 'tcp', localAddress: '0.0.0.0', localPort: 8000, listening: true },
      { family: 'inet', protocol: 'tcp', remoteAddress: '127.0.0.2', remotePort: 443, listening: false },
      { family: 'inet', protocol: 'udp', localAddress: '127.0.0.1', localPort: 5353, listening: false },
    ]);
  });
});

describe.skipIf(skipUnless('root', 'tool:strace', 'tool:sqlite3', 'tool:python3', 'tool:ipcmk'))('strace on real programs', () => {
  let work = '';
  beforeAll(() => {
    work = mkdtempSync(path.join(os.tmpdir(), 'ap-migrate-strace-real-'));
  });
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('sqlite3 on a database file uses files only', async () => {
    const db = path.join(work, 'app.db');
    const result = await createStraceProfiler().profile({ command: ['sqlite3', db, 'create table t(x); insert into t values (1);'] }, { durationMs: 20_000 });
    if (result.isErr()) throw result.error;
    const p = result.value;
    expect(p.files).toContainEqual(expect.objectContaining({ path: db, kind: 'regular', created: true }));
    expect(p.files.find((f) => f.path === db)?.access).toContain('write');
    expect(p.files.some((f) => f.sharedLibrary && /libsqlite3/.test(f.path))).toBe(true);
    expect(p.sockets).toEqual([]);
    expect(p.ipc).toEqual([]);
    expect(p.completeness.complete).toBe(true);
  });

  it('python3 -m http.server uses files and a listening socket', async () => {
    const result = await createStraceProfiler().profile({ command: ['python3', '-m', 'http.server', '0', '--bind', '127.0.0.1'], cwd: work }, { durationMs: 6000 });
    if (result.isErr()) throw result.error;
    const p = result.value;
    expect(p.sockets).toContainEqual(expect.objectContaining({ family: 'inet', protocol: 'tcp', localAddress: '127.0.0.1', listening: true }));
    expect(p.files.some((f) => /\/http\/(__pycache__\/)?server\./.test(f.path))).toBe(true);
    expect(p.ipc).toEqual([]);
  });

  it('ipcmk creating a segment and a semaphore set uses IPC', async () => {
    const result = await createStraceProfiler().profile({ command: ['ipcmk', '-M', '4096', '-S', '2'] }, { durationMs: 20_000 });
    if (result.isErr()) throw result.error;
    const shm = result.value.ipc.find((i) => i.kind === 'sysv-shm');
    const sem = result.value.ipc.find((i) => i.kind === 'sysv-sem');
    try {
      expect(shm).toMatchObject({ kind: 'sysv-shm', size: 4096 });
      expect(sem).toMatchObject({ kind: 'sysv-sem' });
      expect(result.value.sockets).toEqual([]);
    } finally {
      if (shm?.id !== undefined) execFileSync('ipcrm', ['-m', String(shm.id)]);
      if (sem?.id !== undefined) execFileSync('ipcrm', ['-s', String(sem.id)]);
    }
  });

  it('keepRunning leaves the program running, untraced and working', async () => {
    const port = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, '127.0.0.1', () => {
        const address = server.address();
        server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
      });
    });
    const result = await createStraceProfiler().profile({ command: [fixtureBinary('tcp'), String(port), '60000'] }, { durationMs: 1500, keepRunning: true });
    if (result.isErr()) throw result.error;
    const pid = result.value.processes[0]!.pid;
    try {
      expect(result.value.sockets).toContainEqual(expect.objectContaining({ localPort: port, listening: true }));
      expect(readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(/^TracerPid:\s*0$/m);
      // Its syscalls still work after strace is gone: it accepts a new connection.
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.destroy();
          resolve();
        });
        socket.once('error', reject);
      });
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });
});

describe.skipIf(skipUnless('root', 'tool:strace', 'tool:gcc'))('strace: failed lookups and relative paths on real programs', () => {
  it('a program that chdirs, forks, walks directory descriptors and fails lookups: real uses with absolute paths, the rest probes', async () => {
    const site = lookupsSite();
    try {
      const result = await createStraceProfiler().profile({ command: site.command, cwd: site.elsewhere }, { durationMs: 20_000 });
      expectLookupsProfile(result._unsafeUnwrap(), site, { lookups: true });
    } finally {
      site.cleanup();
    }
  }, 30_000);

  it.skipIf(skipUnless(`tool:${NGINX}`))("Debian's nginx with workers (daemon off; master_process on): no nonexistent file, probes instead, workers' ids", async () => {
    const site = await nginxSite();
    try {
      const result = await createStraceProfiler().profile({ command: site.command, cwd: site.dir }, { durationMs: 2500 });
      expectSoundNginxProfile(result._unsafeUnwrap(), site);
    } finally {
      site.cleanup();
    }
  }, 30_000);
});

describe('strace missing', () => {
  it('a strace binary that is not there is PROFILER_UNAVAILABLE, and availability says why', async () => {
    const profiler = createStraceProfiler({ straceBinary: '/nonexistent/strace' });
    const availability = await profiler.availability();
    expect(availability).toMatchObject({ name: 'strace', available: false });
    expect(availability.reason).toMatch(/not installed/);
    const result = await profiler.profile({ command: ['true'] }, { durationMs: 1000 });
    expect(result.isErr() && result.error.code).toBe('PROFILER_UNAVAILABLE');
  });
});

describe.skipIf(skipUnless('tool:strace'))('launch failures are LAUNCH_FAILED, as with the eBPF profiler', () => {
  it('a working directory that does not exist (or is a file) is LAUNCH_FAILED naming it, not PROFILER_UNAVAILABLE', async () => {
    const profiler = createStraceProfiler();
    const missing = path.join(os.tmpdir(), `ap-no-such-dir-${process.pid}`);
    const result = await profiler.profile({ command: ['true'], cwd: missing }, { durationMs: 2000 });
    expect(result.isErr() && result.error.code).toBe('LAUNCH_FAILED');
    expect(result.isErr() && result.error.message).toContain(missing);
    const file = await profiler.profile({ command: ['true'], cwd: '/etc/passwd' }, { durationMs: 2000 });
    expect(file.isErr() && file.error.code).toBe('LAUNCH_FAILED');
  });

  it('a malformed target or options is INVALID_INPUT naming the field, before strace runs', async () => {
    const profiler = createStraceProfiler({ straceBinary: '/nonexistent/strace' }); // would be PROFILER_UNAVAILABLE if it got that far
    const cases: Array<[unknown, unknown, string]> = [
      [undefined, undefined, ''],
      [{ command: 'true' }, undefined, 'command'],
      [{ command: ['true', 1] }, undefined, 'command.1'],
      [{ command: ['true'], cwd: 'tmp' }, undefined, 'cwd'],
      [{ command: ['true'], env: { A: 1 } }, undefined, 'env.A'],
      [{ pid: 2 ** 40 }, undefined, 'pid'],
      [{ command: ['true'] }, { durationMs: -1 }, 'durationMs'],
      [{ command: ['true'] }, null, ''],
    ];
    for (const [target, options, field] of cases) {
      const result = await profiler.profile(target as never, options as never);
      const error = result._unsafeUnwrapErr();
      expect(error.code, JSON.stringify(target)).toBe('INVALID_INPUT');
      expect((error as { issues?: Array<{ path: string }> }).issues?.[0]?.path, JSON.stringify(target)).toBe(field);
    }
  });
});

describe.skipIf(skipUnless('root', 'tool:setpriv', 'tool:strace'))('no permission', () => {
  it('attaching to another user\'s process as nobody is PERMISSION_DENIED for strace and procfs', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ap-migrate-perm-'));
    const target = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const repo = path.resolve(import.meta.dirname, '../..');
      const script = path.join(dir, 'attach.mts');
      writeFileSync(
        script,
        [
          `import { createStraceProfiler } from ${JSON.stringify(path.join(repo, 'src/profilers/strace.ts'))};`,
          `import { createProcfsProfiler } from ${JSON.stringify(path.join(repo, 'src/profilers/procfs.ts'))};`,
          'for (const p of [createStraceProfiler(), createProcfsProfiler()]) {',
          `  const r = await p.profile({ pid: ${target.pid} }, { durationMs: 300 });`,
          "  console.log(p.name, r.isErr() ? r.error.code : 'ok');",
          '}',
        ].join('\n'),
      );
      chmodSync(dir, 0o755);
      chmodSync(script, 0o644);
      const tsx = path.join(repo, 'node_modules/tsx/dist/esm/index.mjs');
      const out = execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--import', pathToFileURL(tsx).href, script], {
        cwd: dir,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
      }).toString();
      expect(out).toContain('strace PERMISSION_DENIED');
      expect(out).toContain('procfs PERMISSION_DENIED');
    } finally {
      target.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
