/**
 * Every remote command string the SDK builds is run exactly as sshd runs it, `$SHELL -c STRING`,
 * under dash, bash and tcsh (the csh family is FreeBSD root's login shell before 14.0), and the
 * program at the end must receive exactly the intended argv, environment and working directory.
 * Covered builders: buildRemoteCommand (with and without PID file, cwd, env), the kill commands
 * of RemoteRunDirectory, the upload/readFile commands of remote-files.ts and the ssh CLI
 * executor's sshArgv. Then the same through a real sshd whose user's login shell is tcsh, for
 * both SSH transports.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshArgv } from '../../src/exec/ssh-cli.js';
import type { Transport } from '../../src/spec/transport.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { readFileArgv, uploadPublishArgv, uploadWriteArgv } from '../../src/transports/remote-files.js';
import { buildRemoteCommand, RemoteRunDirectory } from '../../src/transports/remote-command.js';
import { createSshTransport } from '../../src/transports/ssh.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

const SHELLS = ['/bin/dash', '/bin/bash', '/usr/bin/tcsh'] as const;
const RUNS = 60;
/** Fewer runs for the builders whose cases start several processes each. */
const FEW = 10;

// ---------------------------------------------------------------- generators

/** Characters and pieces that each shell treats specially somewhere. */
const HOSTILE = [
  "'", '"', '!', '!!', '$', '$(id)', '`id`', '\\', '\\n', '\\0', '\\c', '%b', '%s', '\n', '\r', '\t', ' ', '=', 'X=1', '-', '--',
  '*', '?', '~', '#', ';', '&', '|', '(', ')', '{', '}', '<', '>', '^', '[', ']', '\u0001', '\u007f', 'é', '日本', '😀', '\u00a0',
];
const piece = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HOSTILE) },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 2 }) },
  { weight: 2, arbitrary: fc.constantFrom('a', 'Z', '0', '9', '.', '/', '_', '@', '+', ',', ':') },
);
/** Any word a C string can hold (no NUL), including the empty one. */
const word = fc
  .array(piece, { maxLength: 8 })
  .map((p) => p.join(''))
  .filter((s) => !s.includes('\0') && Buffer.from(s, 'utf8').toString('utf8') === s);
const args = fc.array(fc.oneof({ weight: 5, arbitrary: word }, { weight: 1, arbitrary: fc.constantFrom('', '-n', '-e', '--', '-') }), { maxLength: 6 });

// Names that change how the shell or the printer itself behaves are not what this test is about.
const SPECIAL_NAME = /^(PATH|IFS|PWD|OLDPWD|HOME|ENV|CDPATH|PS[1-4]|OPTIND|OPTARG|LINENO|PPID|SHLVL|_|LD_.*|GLIBC_.*|MALLOC_.*|LC_.*|LANG|LANGUAGE|TMPDIR|POSIXLY_CORRECT|BASH.*|SHELLOPTS|NLSPATH|TERM|TZ.*|MAIL.*|HOSTALIASES|LOCALDOMAIN|RES_OPTIONS)$/;
const envName = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,8}$/).filter((n) => !SPECIAL_NAME.test(n));
const env = fc.dictionary(envName, word, { maxKeys: 3 });

/** One directory name: any characters but `/` and NUL, not `.` or `..`, not too long. */
const dirName = word.map((w) => w.replace(/\//g, '_')).filter((w) => w !== '' && w !== '.' && w !== '..' && Buffer.byteLength(w) < 200);
const cwdParts = fc.array(dirName, { minLength: 1, maxLength: 2 });

// ---------------------------------------------------------------- the printer

let base: string;
let printer: string;

/** Prints the physical cwd, the environment and its arguments, in NUL-separated sections. */
const PRINTER = `#!/bin/sh
pwd -P
printf '\\0'
/usr/bin/env -0
printf '\\0'
[ "$#" -gt 0 ] && printf '%s\\0' "$@"
exit 0
`;

interface Printed {
  cwd: string;
  env: Map<string, string>;
  args: string[];
}

function parsePrinted(out: Buffer): Printed {
  const text = out.toString('utf8');
  const first = text.indexOf('\0');
  const cwd = text.slice(0, first).replace(/\n$/, '');
  const envMap = new Map<string, string>();
  let at = first + 1;
  for (;;) {
    const end = text.indexOf('\0', at);
    const entry = text.slice(at, end);
    at = end + 1;
    if (entry === '') break;
    const eq = entry.indexOf('=');
    envMap.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  const rest = text.slice(at);
  const words = rest === '' ? [] : rest.split('\0').slice(0, -1);
  return { cwd, env: envMap, args: words };
}

/** Run `command` the way sshd does: `<login shell> -c command`, from `base`. */
function asSshd(shell: string, command: string, input?: Buffer): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(shell, ['-c', command], { cwd: base, input: input ?? Buffer.alloc(0), maxBuffer: 16 << 20, timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString('utf8') };
}

/** The wrapper sends only plain ASCII: no newline, no `!`, no quote inside the quoted part. */
function expectPlainWrapper(command: string): void {
  const m = /^exec \/bin\/sh -c 'eval "\$\(printf %b "([^"]*)"\)"'$/.exec(command);
  expect(m, command.slice(0, 120)).not.toBeNull();
  expect(m![1]).toMatch(/^[A-Za-z0-9 ,./:=_+@\\-]*$/);
}

function makeCwd(parts: string[], relative: boolean): { cwd: string; real: string } {
  const rel = join(`c-${randomBytes(4).toString('hex')}`, ...parts);
  mkdirSync(join(base, rel), { recursive: true });
  return { cwd: relative ? rel : join(base, rel), real: realpathSync(join(base, rel)) };
}

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'apm-words-'));
  printer = join(base, 'print args');
  writeFileSync(printer, PRINTER, { mode: 0o755 });
});
afterAll(() => {
  if (base) rmSync(base, { recursive: true, force: true });
});

// ---------------------------------------------------------------- properties

describe.skipIf(skipUnless('tool:/bin/dash', 'tool:/bin/bash', 'tool:/usr/bin/tcsh', 'tool:/usr/bin/env'))('remote command strings under dash, bash and tcsh', () => {
  for (const shell of SHELLS) {
    describe(shell, () => {
      it(`buildRemoteCommand with or without PID file, cwd (absolute or relative) and env: exact argv, env and cwd (${RUNS} runs)`, () => {
        fc.assert(
          fc.property(args, env, fc.option(cwdParts, { nil: undefined }), fc.boolean(), fc.boolean(), (a, e, parts, relative, withPid) => {
            const dir = parts === undefined ? undefined : makeCwd(parts, relative);
            const pidFile = join(base, `p-${randomBytes(4).toString('hex')}.pid`);
            const command = buildRemoteCommand([printer, ...a], {
              ...(dir ? { cwd: dir.cwd } : {}),
              env: e,
              ...(withPid ? { pidFile } : {}),
            })._unsafeUnwrap();
            expectPlainWrapper(command);
            const r = asSshd(shell, command);
            expect(r.stderr).toBe('');
            expect(r.status).toBe(0);
            const printed = parsePrinted(r.stdout);
            expect(printed.args).toEqual(a);
            expect(printed.cwd).toBe(dir ? dir.real : realpathSync(base));
            for (const [name, value] of Object.entries(e)) expect(printed.env.get(name), name).toBe(value);
            // The wrapper removes its PID file when the command ends.
            expect(existsSync(pidFile)).toBe(false);
          }),
          { numRuns: RUNS },
        );
      });

      it('keeps exit status and a missing cwd is exit 127 (PID file removed either way)', () => {
        const pidFile = join(base, `status-${randomBytes(4).toString('hex')}.pid`);
        const seven = buildRemoteCommand(['/bin/sh', '-c', 'exit 7'], { pidFile })._unsafeUnwrap();
        expect(asSshd(shell, seven).status).toBe(7);
        const missing = buildRemoteCommand([printer], { cwd: join(base, 'no such dir'), pidFile })._unsafeUnwrap();
        expect(asSshd(shell, missing).status).toBe(127);
        expect(existsSync(pidFile)).toBe(false);
        const noPid = buildRemoteCommand(['/bin/sh', '-c', 'exit 9'], {})._unsafeUnwrap();
        expect(asSshd(shell, noPid).status).toBe(9);
      });

      it('the PID recorded is the process group of the running command; killCommand kills that group', async () => {
        const run = new RemoteRunDirectory();
        const pidFile = run.pidFile();
        const marker = `apm-words-${randomBytes(4).toString('hex')}`;
        // `setsid` stands in for sshd, which starts each session as its own group leader.
        const command = buildRemoteCommand(['/bin/sh', '-c', 'sleep 60 & wait', marker], { pidFile })._unsafeUnwrap();
        const child = spawn('setsid', [shell, '-c', command], { cwd: base, stdio: 'ignore' });
        const exited = new Promise((resolve) => child.once('exit', resolve));
        try {
          await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '');
          const pid = Number(readFileSync(pidFile, 'utf8').trim());
          // The login shell exec'd /bin/sh: same PID, and it leads the group.
          expect(pid).toBe(child.pid);
          expect(processGroupOf(pid)).toBe(pid);
          await waitFor(() => groupMembers(pid).length >= 3); // sh, its subshell's sh -c, sleep
          const kill = asSshd(shell, run.killCommand(pidFile));
          expect(kill.status).toBe(0);
          expectPlainWrapper(run.killCommand(pidFile));
          await exited;
          await waitFor(() => groupMembers(pid).length === 0);
          expect(existsSync(pidFile)).toBe(false);
        } finally {
          child.kill('SIGKILL');
        }
      });

      it(`killCommand / killAllCommand with hostile PID file names (${FEW} runs)`, () => {
        fc.assert(
          fc.property(fc.array(dirName, { minLength: 1, maxLength: 3 }), (names) => {
            const files = names.map((n, i) => join(base, `k${i}-${randomBytes(3).toString('hex')}-${n}`));
            const sleepers = files.map((f) => {
              const s = spawn('setsid', ['sleep', '60'], { stdio: 'ignore' });
              writeFileSync(f, `${s.pid}\n`);
              return s;
            });
            try {
              const run = new RemoteRunDirectory();
              const command = files.length === 1 ? run.killCommand(files[0]!) : run.killAllCommand(files);
              expectPlainWrapper(command);
              expect(asSshd(shell, command).status).toBe(0);
              for (const f of files) expect(existsSync(f)).toBe(false);
              for (const s of sleepers) expect(waitExit(s.pid!)).toBe(true);
            } finally {
              for (const s of sleepers) s.kill('SIGKILL');
            }
          }),
          { numRuns: FEW },
        );
      });

      it('killCommand ignores a PID file whose content is not a plain PID (the command may have rewritten it)', async () => {
        const sleeper = spawn('setsid', ['sleep', '60'], { stdio: 'ignore' });
        try {
          const run = new RemoteRunDirectory();
          for (const content of [`-${sleeper.pid}`, `${sleeper.pid} 1`, `${sleeper.pid}x`, '0', '']) {
            const f = join(base, `bad-${randomBytes(3).toString('hex')}.pid`);
            writeFileSync(f, content);
            expect(asSshd(shell, run.killCommand(f)).status).toBe(0);
            expect(existsSync(f)).toBe(false);
          }
          await new Promise((r) => setTimeout(r, 100));
          expect(groupMembers(sleeper.pid!)).toEqual([sleeper.pid]);
        } finally {
          sleeper.kill('SIGKILL');
        }
      });

      it(`upload and readFile commands with hostile paths and contents (${FEW} runs)`, () => {
        fc.assert(
          fc.property(dirName, fc.uint8Array({ maxLength: 300 }), fc.constantFrom('600', '644', '755'), (name, bytes, mode) => {
            const path = join(base, `u-${randomBytes(3).toString('hex')}-${name}`);
            const temp = `${path}.part`;
            const run = new RemoteRunDirectory();
            const data = Buffer.from(bytes);
            const write = buildRemoteCommand(uploadWriteArgv(temp), { pidFile: run.pidFile() })._unsafeUnwrap();
            expectPlainWrapper(write);
            expect(asSshd(shell, write, data).status).toBe(0);
            const publish = buildRemoteCommand(uploadPublishArgv(temp, path, mode, data.length), { pidFile: run.pidFile() })._unsafeUnwrap();
            const published = asSshd(shell, publish);
            expect(published.stderr).toBe('');
            expect(published.status).toBe(0);
            expect(existsSync(temp)).toBe(false);
            expect(readFileSync(path).equals(data)).toBe(true);
            expect((statSync(path).mode & 0o777).toString(8)).toBe(mode);
            const read = asSshd(shell, buildRemoteCommand(readFileArgv(path, 1000), {})._unsafeUnwrap());
            expect(read.status).toBe(0);
            expect(read.stdout.equals(data)).toBe(true);
            const wrongSize = buildRemoteCommand(uploadPublishArgv(path, `${path}.2`, mode, data.length + 1), {})._unsafeUnwrap();
            expect(asSshd(shell, wrongSize).status).toBe(65);
            const missing = buildRemoteCommand(readFileArgv(`${path}.missing`, 10), {})._unsafeUnwrap();
            expect(asSshd(shell, missing).status).toBe(66);
          }),
          { numRuns: FEW },
        );
      });

      it(`ssh CLI executor command line: exact argv, env and cwd (${RUNS / 2} runs)`, () => {
        fc.assert(
          fc.property(args, env, cwdParts, (a, e, parts) => {
            const { cwd, real } = makeCwd(parts, false);
            const line = sshArgv({ host: 'h' }, [printer, ...a], { cwd, env: e })._unsafeUnwrap().at(-1)!;
            expectPlainWrapper(line);
            const r = asSshd(shell, line);
            expect(r.stderr).toBe('');
            const printed = parsePrinted(r.stdout);
            expect(printed.args).toEqual(a);
            expect(printed.cwd).toBe(real);
            for (const [name, value] of Object.entries(e)) expect(printed.env.get(name), name).toBe(value);
          }),
          { numRuns: RUNS / 2 },
        );
      });
    });
  }

  it('the old unwrapped POSIX text really breaks under tcsh (what the wrapper is for)', () => {
    const raw = "printf '%s\\n' 'a!b' 'line1\nline2'";
    expect(asSshd('/bin/dash', raw).stdout.toString()).toBe('a!b\nline1\nline2\n');
    expect(asSshd('/usr/bin/tcsh', raw).status).not.toBe(0);
  });
});

// ---------------------------------------------------------------- helpers for processes

function processGroupOf(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[2]);
}

/** Live (not zombie) members of a process group. */
function groupMembers(pgid: number): number[] {
  const out = spawnSync('pgrep', ['-g', String(pgid)], { encoding: 'utf8' }).stdout;
  return out
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
      } catch {
        return false;
      }
    });
}

/** Whether `pid` is gone (or a zombie) within a few seconds. */
function waitExit(pid: number): boolean {
  for (let i = 0; i < 200; i++) {
    let state = '';
    try {
      state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] ?? '';
    } catch {
      return true;
    }
    if (state === 'Z') return true;
    execFileSync('sleep', ['0.02']);
  }
  return false;
}

async function waitFor(condition: () => boolean, ms = 10_000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > ms) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---------------------------------------------------------------- a real sshd, login shell tcsh

describe.skipIf(skipUnless('root', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:ssh-keygen', 'tool:useradd', 'tool:userdel', 'tool:/usr/bin/tcsh'))(
  'both SSH transports against a user whose login shell is tcsh',
  () => {
    let sshd: TestSshd;
    let home: string;
    const user = `apmtc${randomBytes(3).toString('hex')}`;

    beforeAll(async () => {
      sshd = await startSshd();
      home = mkdtempSync(join(tmpdir(), 'apm-tcsh-home-'));
      // `*` (not `!`): an account sshd does not treat as locked, with no password to log in with.
      execFileSync('useradd', ['-M', '-d', home, '-s', '/usr/bin/tcsh', '-p', '*', user]);
      execFileSync('chown', [user, home]);
      // sshd reads authorized_keys as the user: let it through the helper's private dir.
      chmodSync(sshd.dir, 0o711);
      chmodSync(join(sshd.dir, 'authorized_keys'), 0o644);
    });
    afterAll(async () => {
      await sshd?.stop();
      // Anything of the throwaway user still running was started by this test: end it by PID.
      for (const pid of spawnSync('pgrep', ['-u', user], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      spawnSync('userdel', [user]);
      if (home) rmSync(home, { recursive: true, force: true });
    });

    const SCRIPT = [
      'echo "first: $1"',
      "printf '%s\\n' 'bang!' \"it's\" '!!' \"a\\\"b\"",
      'if [ -n "$2" ]; then echo "second: $2"; fi',
      'echo "shell: $SHELL"',
    ].join('\n');
    const EXPECTED = ['first: x!y', 'bang!', "it's", '!!', 'a"b', "second: line1\nline2 'q'", 'shell: /usr/bin/tcsh', ''].join('\n');

    const variants: Array<[string, () => Promise<Transport>]> = [
      [
        'ssh2',
        async () =>
          (
            await createSshTransport({ host: sshd.host, port: sshd.port, username: user, privateKeyPath: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath })
          )._unsafeUnwrap(),
      ],
      [
        'openssh',
        async () =>
          (
            await createOpenSshTransport({ host: sshd.host, port: sshd.port, username: user, identityFile: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath })
          )._unsafeUnwrap(),
      ],
    ];

    it('the login shell really is tcsh: a plain POSIX command line fails there', () => {
      const r = spawnSync(
        'ssh',
        ['-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${sshd.knownHostsPath}`, '-i', sshd.clientKeyPath, '-p', String(sshd.port), '-l', user, '--', sshd.host, "printf '%s\\n' 'a!b'"],
        { encoding: 'utf8', timeout: 20_000 },
      );
      expect(r.stderr).toMatch(/Event not found/);
    });

    for (const [name, connect] of variants) {
      it(`${name}: a multi-line script with ! and quotes, cwd and env arrive intact`, async () => {
        const transport = await connect();
        try {
          const r = (await transport.exec(['/bin/sh', '-c', SCRIPT, 'sh', 'x!y', "line1\nline2 'q'"]))._unsafeUnwrap();
          expect(r.stdout).toBe(EXPECTED);
          const where = (await transport.exec(['/bin/sh', '-c', 'pwd; printf "%s" "$GREETING"'], { cwd: '/tmp', env: { GREETING: "hi! it's $(x)\n" } }))._unsafeUnwrap();
          expect(where.stdout).toBe("/tmp\nhi! it's $(x)\n");
          const file = `/tmp/apm-tcsh-${randomBytes(3).toString('hex')} it's!`;
          (await transport.upload(Readable.from([Buffer.from('payload!\n')]), file))._unsafeUnwrap();
          expect((await transport.readFile(file))._unsafeUnwrap().toString()).toBe('payload!\n');
          rmSync(file, { force: true });
        } finally {
          (await transport.close())._unsafeUnwrap();
        }
      });

      it(`${name}: an abort kills the remote command's whole process group`, async () => {
        const transport = await connect();
        const marker = `apm-tcsh-abort-${randomBytes(3).toString('hex')}`;
        try {
          const controller = new AbortController();
          const running = transport.exec(['/bin/sh', '-c', 'sleep 120 & wait', marker], { signal: controller.signal });
          await waitFor(() => spawnSync('pgrep', ['-u', user, '-f', 'sleep 120'], { encoding: 'utf8' }).stdout.trim() !== '');
          controller.abort();
          expect((await running)._unsafeUnwrapErr().code).toBe('ABORTED');
          await waitFor(() => spawnSync('pgrep', ['-u', user, '-f', 'sleep 120'], { encoding: 'utf8' }).stdout.trim() === '');
        } finally {
          (await transport.close())._unsafeUnwrap();
        }
      });
    }
  },
);
