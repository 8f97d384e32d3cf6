/**
 * The `ap-migrate` command line, run for real as a child process: src/cli/main.ts bundled once
 * with esbuild (dependencies left external, as the published `dist/cli.js` is built), then each
 * test runs `node main.mjs ...` and checks exit code, stdout and stderr.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { arch, release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResourceProfileSchema, type ResourceProfileInput } from '../../src/policy/profile.js';
import { fixtureBinary } from '../helpers/fixtures.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

// Inside the repository, so the bundle's bare imports (neverthrow, zod, ssh2 ...) resolve from node_modules.
const cliDir = resolve(`test/.build/cli-${process.pid}-${randomBytes(3).toString('hex')}`);
const cliPath = join(cliDir, 'main.mjs');
const work = join(tmpdir(), `apm-cli-${process.pid}-${randomBytes(3).toString('hex')}`);

/** Run the CLI with `args`; resolves with its exit code and output (killed after 60 s). */
function runCli(args: string[], timeoutMs = 60_000): Promise<CliRun> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** A small valid profile of /usr/bin/true reading one data file, for this machine's platform. */
function trueProfile(dataFile: string): ResourceProfileInput {
  const exe = '/usr/bin/true';
  return {
    executable: exe,
    executableSize: statSync(exe).size,
    argv: [exe],
    cwd: '/',
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: release(), arch: arch() === 'x64' ? 'x86_64' : arch() },
    files: [{ path: dataFile, kind: 'regular', access: ['read'], size: statSync(dataFile).size }],
  };
}

/** A pid no process has now. */
function unusedPid(): number {
  let pid = 999_999;
  while (existsSync(`/proc/${pid}`)) pid++;
  return pid;
}

beforeAll(async () => {
  mkdirSync(work, { recursive: true });
  await build({
    entryPoints: ['src/cli/main.ts'],
    outfile: cliPath,
    bundle: true,
    platform: 'node',
    format: 'esm',
    packages: 'external',
    target: 'node20',
    logLevel: 'warning',
  });
});

afterAll(() => {
  rmSync(cliDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

describe('usage and input errors', () => {
  let profilePath = '';
  beforeAll(() => {
    const data = join(work, 'data.txt');
    writeFileSync(data, 'some data\n');
    profilePath = join(work, 'true-profile.json');
    writeFileSync(profilePath, JSON.stringify(trueProfile(data)));
  });

  it('detect lists ebpf, strace and procfs, each available or not (with the reason)', async () => {
    const run = await runCli(['detect']);
    expect(run.code).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines.map((l) => l.split(/\s+/)[0])).toEqual(['ebpf', 'strace', 'procfs']);
    for (const line of lines) expect(line).toMatch(/^(ebpf|strace|procfs)\s+(available|unavailable: .+)/);
  });

  it('profile with neither --pid nor a command is bad usage (exit 2)', async () => {
    const run = await runCli(['profile']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('give --pid N or a command after --');
    expect(run.stderr).toContain('usage:');
  });

  it('bad flags are bad usage (exit 2) and say what is wrong', async () => {
    const both = await runCli(['profile', '--pid', '1', '--', 'true']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('not both');
    const duration = await runCli(['profile', '--duration', 'soon', '--', 'true']);
    expect(duration.code).toBe(2);
    expect(duration.stderr).toContain('--duration must be a positive number');
    const unknown = await runCli(['plan', '--bogus', profilePath]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/Unknown option '--bogus'[\s\S]*usage:/);
    const client = await runCli(['migrate', '--to', join(work, 'dst'), '--profile', profilePath, '--ssh-client', 'telnet']);
    expect(client.code).toBe(2);
    expect(client.stderr).toContain('--ssh-client must be');
    const command = await runCli(['nonsense']);
    expect(command.code).toBe(2);
    expect(command.stderr).toContain('unknown command "nonsense"');
  });

  it('every command rejects an option it does not know, naming it, with that command\'s usage (exit 2)', async () => {
    const commands: Array<[string, string[]]> = [
      ['detect', ['detect', '--extra']],
      ['plan', ['plan', profilePath, '--extra']],
      ['profile', ['profile', '--extra', '--pid', '1']],
      ['migrate', ['migrate', '--to', join(work, 'dst'), '--profile', profilePath, '--extra']],
    ];
    for (const [name, args] of commands) {
      const run = await runCli(args);
      expect(run.code, name).toBe(2);
      expect(run.stderr, name).toContain(`ap-migrate ${name}: Unknown option '--extra'`);
      expect(run.stderr, name).toMatch(new RegExp(`usage:\\n  ap-migrate ${name}`));
      expect(run.stdout, name).toBe('');
    }
    const positional = await runCli(['detect', 'now']);
    expect(positional.code).toBe(2);
    expect(positional.stderr).toContain("Unexpected argument 'now'");
    const twoFiles = await runCli(['plan', profilePath, profilePath]);
    expect(twoFiles.code).toBe(2);
    expect(twoFiles.stderr).toContain('takes one profile file');
    const topLevel = await runCli(['--bogus']);
    expect(topLevel.code).toBe(2);
    expect(topLevel.stderr).toContain('unknown option "--bogus"');
  });

  it('--help and -h print the usage and exit 0: for every command, and for the CLI', async () => {
    for (const name of ['detect', 'plan', 'profile', 'migrate']) {
      for (const flag of ['--help', '-h']) {
        const run = await runCli([name, flag]);
        expect(run.code, `${name} ${flag}`).toBe(0);
        expect(run.stdout, `${name} ${flag}`).toMatch(new RegExp(`^usage:\\n  ap-migrate ${name}`));
        for (const other of ['detect', 'plan', 'profile', 'migrate'].filter((o) => o !== name)) expect(run.stdout).not.toContain(`ap-migrate ${other}`);
        expect(run.stderr, `${name} ${flag}`).toBe('');
      }
    }
    // Help wins over what is missing or wrong around it.
    const withOthers = await runCli(['migrate', '--dry-run', '--help']);
    expect(withOthers.code).toBe(0);
    expect(withOthers.stdout).toContain('--to ssh://');
    expect(withOthers.stderr).not.toContain('Unknown option');
    // After --, --help belongs to the program being profiled.
    const dashed = await runCli(['profile', '--pid', '1', '--', 'ls', '--help']);
    expect(dashed.code).toBe(2);
    expect(dashed.stderr).toContain('not both');
    for (const args of [['--help'], ['-h'], ['help']]) {
      const run = await runCli(args);
      expect(run.code, args[0]).toBe(0);
      for (const name of ['profile', 'migrate', 'detect', 'plan']) expect(run.stdout).toContain(`ap-migrate ${name}`);
    }
    const helpPlan = await runCli(['help', 'plan']);
    expect(helpPlan.code).toBe(0);
    expect(helpPlan.stdout).toMatch(/^usage:\n  ap-migrate plan PROFILE\.json/);
    const none = await runCli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('usage:');
  });

  it('--version prints the version of package.json, exit 0', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const run = await runCli(['--version']);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`${version}\n`);
    expect(run.stderr).toBe('');
  });

  it('profile --pid of a process that does not exist: NO_SUCH_PROCESS, exit 1', async () => {
    const pid = unusedPid();
    const run = await runCli(['profile', '--profiler', 'procfs', '--pid', String(pid)]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error [NO_SUCH_PROCESS]');
    expect(run.stderr).toContain(String(pid));
  });

  it('plan prints the table for a JSON profile, and --json parses', async () => {
    const table = await runCli(['plan', profilePath]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^\*\s+chroot\s+yes/m);
    expect(table.stdout).toMatch(/^\s+linux-namespaces\s+yes/m);
    expect(table.stdout).toContain('chosen: chroot');
    const json = await runCli(['plan', '--json', profilePath]);
    expect(json.code).toBe(0);
    const plan = JSON.parse(json.stdout) as { chosen: string; classes: string[]; candidates: Array<{ method: string }> };
    expect(plan.chosen).toBe('chroot');
    expect(plan.classes).toEqual(['file']);
    expect(plan.candidates.map((c) => c.method)).toContain('linux-namespaces');
  });

  it('plan on a bad profile: INVALID_INPUT naming every bad field, exit 1', async () => {
    const bad = { ...trueProfile(join(work, 'data.txt')), uid: 'root', platform: { os: 'linux', release: release() } };
    const badPath = join(work, 'bad-profile.json');
    writeFileSync(badPath, JSON.stringify(bad));
    const run = await runCli(['plan', badPath]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error [INVALID_INPUT]: Invalid resource profile at `uid`');
    expect(run.stderr).toMatch(/^\s+platform\.arch: /m);
    const json = await runCli(['plan', '--json', badPath]);
    expect(json.code).toBe(1);
    const { error } = JSON.parse(json.stdout) as { error: { code: string; details: { issues: Array<{ path: string }> } } };
    expect(error.code).toBe('INVALID_INPUT');
    expect(error.details.issues.map((i) => i.path).sort()).toEqual(['platform.arch', 'uid']);
  });

  it('plan on a file that does not exist or is not JSON: INVALID_INPUT naming the file, exit 1', async () => {
    const missing = join(work, 'no-such-profile.json');
    const gone = await runCli(['plan', missing]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain(`error [INVALID_INPUT]: Invalid profile file at \`${missing}\`: cannot read it`);
    const notJson = join(work, 'not-json.json');
    writeFileSync(notJson, '{ "executable": ');
    const broken = await runCli(['plan', notJson]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain('error [INVALID_INPUT]');
  });

  it.skipIf(skipUnless('tool:unshare', 'tool:node'))('migrate --dry-run to a local directory plans and checks, sends nothing, exit 0', async () => {
    const to = join(work, 'dry-destination');
    // The profile says uid 0: --allow-root is what lets it through (see the UNSAFE_PROFILE test below).
    const run = await runCli(['migrate', '--to', to, '--profile', profilePath, '--dry-run', '--allow-root']);
    expect(run.stderr).not.toContain('error [');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('dry run: nothing sent');
    expect(run.stdout).toMatch(/sent 0 B/);
    expect(run.stdout).toContain('chosen: chroot');
    // Pre-flight may create the (empty) destination root; nothing is put in it.
    expect(existsSync(to) ? readdirSync(to) : []).toEqual([]);
  });

  it('migrate without --allow-root refuses a uid-0 profile: UNSAFE_PROFILE in --json output, exit 1, nothing sent', async () => {
    const to = join(work, 'root-refused');
    const run = await runCli(['migrate', '--to', to, '--profile', profilePath, '--dry-run', '--json']);
    expect(run.code).toBe(1);
    const { error } = JSON.parse(run.stdout) as { error: { code: string; message: string; details: { field?: string } } };
    expect(error.code).toBe('UNSAFE_PROFILE');
    expect(error.details.field).toMatch(/^(uid|gid)$/);
    expect(existsSync(to) ? readdirSync(to) : []).toEqual([]);
  });

  it('migrate --include of a path that does not exist: INVALID_INPUT naming the path, exit 1, nothing sent', async () => {
    const to = join(work, 'include-missing');
    const missing = join(work, 'no-such-dir');
    const run = await runCli(['migrate', '--to', to, '--profile', profilePath, '--dry-run', '--allow-root', '--include', missing]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error [INVALID_INPUT]');
    expect(run.stderr).toContain(`${missing} does not exist`);
    expect(run.stderr).toContain('`include`');
    const json = await runCli(['migrate', '--to', to, '--profile', profilePath, '--dry-run', '--allow-root', '--json', '--include', missing]);
    expect(json.code).toBe(1);
    const { error } = JSON.parse(json.stdout) as { error: { code: string; details: { issues: Array<{ path: string; message: string }> } } };
    expect(error.code).toBe('INVALID_INPUT');
    expect(error.details.issues).toEqual([{ path: 'include', message: expect.stringContaining(missing) }]);
    expect(existsSync(to) ? readdirSync(to) : []).toEqual([]);
  });

  it('migrate --include of a relative path is INVALID_INPUT; --no-capture with --include is bad usage (exit 2)', async () => {
    const to = join(work, 'include-relative');
    const relative = await runCli(['migrate', '--to', to, '--profile', profilePath, '--dry-run', '--allow-root', '--include', 'data']);
    expect(relative.code).toBe(1);
    expect(relative.stderr).toMatch(/error \[INVALID_INPUT\]: Invalid capture options at `include\.0`/);
    const both = await runCli(['migrate', '--to', to, '--profile', profilePath, '--no-capture', '--exclude', '/tmp']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--no-capture');
    expect(both.stderr).toMatch(/usage:\n  ap-migrate migrate/);
  });

  it('migrate --help explains --allow-root, --include, --exclude and --no-capture, one line each', async () => {
    const run = await runCli(['migrate', '--help']);
    expect(run.code).toBe(0);
    for (const flag of ['--allow-root', '--include PATH', '--exclude PATH', '--no-capture']) {
      expect(run.stdout, flag).toMatch(new RegExp(`^\\s+${flag}\\s{2,}\\S`, 'm'));
    }
  });
});

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:strace'))('profile a real program with strace', () => {
  const dir = join(work, 'files-only');
  let binary = '';
  beforeAll(() => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'input.txt'), 'ground truth\n');
    binary = fixtureBinary('files_only');
  });

  it('prints the profile as a table with the paths it used, and a progress line on stderr', async () => {
    const run = await runCli(['profile', '--profiler', 'strace', '--duration', '1', '--', binary, dir, '3000']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`executable: ${binary}`);
    expect(run.stdout).toMatch(new RegExp(`^\\s+read\\s+regular\\s+13\\s+${join(dir, 'input.txt')}$`, 'm'));
    expect(run.stdout).toMatch(new RegExp(`^\\s+write\\s+regular\\s+\\d+\\s+${join(dir, 'output.txt')}\\s+\\[created\\]$`, 'm'));
    expect(run.stdout).toMatch(new RegExp(`^\\s+read,write\\s+regular\\s+\\d+\\s+${join(dir, 'relative.txt')}`, 'm'));
    expect(run.stdout).not.toContain('missing.txt'); // a failed open is not a use
    expect(run.stdout).toContain('sockets (0):');
    expect(run.stdout).toContain('ipc (0):');
    expect(run.stderr).toMatch(/^strace: \d+ events, \d+\.\d s$/m);
  });

  it('--json prints a profile that validates with ResourceProfileSchema, and plan accepts it', async () => {
    const run = await runCli(['profile', '--profiler', 'strace', '--duration', '1', '--json', '--', binary, dir, '3000']);
    expect(run.code).toBe(0);
    const parsed = ResourceProfileSchema.safeParse(JSON.parse(run.stdout));
    expect(parsed.success, JSON.stringify(parsed.error?.issues)).toBe(true);
    const profile = parsed.data!;
    expect(profile.executable).toBe(binary);
    expect(profile.files.map((f) => f.path)).toEqual(expect.arrayContaining([join(dir, 'input.txt'), join(dir, 'output.txt'), join(dir, 'at.txt')]));
    expect(profile.sockets).toEqual([]);
    const saved = join(work, 'strace-profile.json');
    writeFileSync(saved, run.stdout);
    const plan = await runCli(['plan', '--json', saved]);
    expect(plan.code).toBe(0);
    expect((JSON.parse(plan.stdout) as { chosen: string }).chosen).toBe('chroot');
  });

  it('the program it launched is not left running', async () => {
    await new Promise((r) => setTimeout(r, 200));
    const ps = execFileSync('ps', ['-eo', 'stat=,args='], { encoding: 'utf8' });
    const alive = ps.split('\n').filter((l) => l.includes(binary) && !l.trim().startsWith('Z'));
    expect(alive).toEqual([]);
  });
});

describe.skipIf(skipUnless('root', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:ssh-keygen'))('migrate over SSH with a wrong host key', () => {
  let sshd: TestSshd;
  let profilePath = '';
  let wrongKnownHosts = '';
  let emptyKnownHosts = '';

  beforeAll(async () => {
    sshd = await startSshd();
    const data = join(work, 'ssh-data.txt');
    writeFileSync(data, 'data\n');
    profilePath = join(work, 'ssh-profile.json');
    writeFileSync(profilePath, JSON.stringify(trueProfile(data)));
    // A known_hosts that names this server with some other key: a changed host key.
    const otherKey = join(work, 'other_host_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey], { stdio: 'ignore' });
    const otherPublic = execFileSync('cat', [`${otherKey}.pub`], { encoding: 'utf8' }).trim().split(/\s+/).slice(0, 2).join(' ');
    wrongKnownHosts = join(work, 'wrong_known_hosts');
    writeFileSync(wrongKnownHosts, `[127.0.0.1]:${sshd.port} ${otherPublic}\n`);
    emptyKnownHosts = join(work, 'empty_known_hosts');
    writeFileSync(emptyKnownHosts, '');
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  for (const client of ['openssh', 'ssh2'] as const) {
    it(`${client}: a changed host key is refused with HOST_KEY_MISMATCH before anything is sent, exit 1`, async () => {
      const remote = join(work, `ssh-dst-${client}`);
      const run = await runCli([
        'migrate', '--to', `ssh://root@127.0.0.1:${sshd.port}${remote}`, '--profile', profilePath,
        '--identity', sshd.clientKeyPath, '--known-hosts', wrongKnownHosts, '--ssh-client', client,
      ]);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/error \[HOST_KEY_MISMATCH\]: .*127\.0\.0\.1/);
      expect(existsSync(remote)).toBe(false);
      expect(sshd.log()).not.toContain('Accepted publickey');
    });

    it(`${client}: an unknown host is refused with HOST_KEY_UNKNOWN, exit 1 (--json gives the error object)`, async () => {
      const remote = join(work, `ssh-dst-unknown-${client}`);
      const run = await runCli([
        'migrate', '--json', '--to', `ssh://root@127.0.0.1:${sshd.port}${remote}`, '--profile', profilePath,
        '--identity', sshd.clientKeyPath, '--known-hosts', emptyKnownHosts, '--ssh-client', client,
      ]);
      expect(run.code).toBe(1);
      const { error } = JSON.parse(run.stdout) as { error: { code: string; message: string } };
      expect(error.code).toBe('HOST_KEY_UNKNOWN');
      expect(existsSync(remote)).toBe(false);
      expect(sshd.log()).not.toContain('Accepted publickey');
    });
  }
});
