/**
 * A scripted FreeBSD host for the profiler conformance suite. No FreeBSD host exists here, so
 * the fixture programs "run" as recordings in test/fixtures/freebsd/conformance, written from
 * the tools' documented output formats (never captured):
 *
 * - `host.txt`: what the host prints when no fixture runs (uname, id, ps, sockstat, ipcs) and
 *   what `stat` says of each of its files;
 * - `<program>.launch.txt`: the exact ktrace command the profiler must send to launch a fixture,
 *   the working directory it must ask for, the exit status and the kdump trace;
 * - `<program>.attach.txt`: a fixture running: its ps rows, the exact procstat commands for its
 *   tree with their output, and the sockstat rows (and ipcs objects) it adds to the host's.
 *
 * The Executor answers only the commands these recordings name, exactly; any other command fails
 * the profile and is reported by `cleanUp()`, so the suite fails loudly and the commands the
 * profiler sends are pinned.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { err, ok, type Result, ResultAsync } from 'neverthrow';
import { ApMigrateError } from '../../src/errors.js';
import { ExecError } from '../../src/exec/local.js';
import { PS_ARGV } from '../../src/profilers/freebsd.js';
import type { ExecOptions, ExecResult, Executor } from '../../src/spec/executor.js';
import type { ConformanceHost, ConformanceWorld } from '../conformance/profiler-suite.js';
import { FIXTURE_PROGRAMS, type FixtureProgram } from '../helpers/fixtures.js';
import { FIXTURES, MARK } from './freebsd-scripted.js';

const RECORDINGS = join(FIXTURES, 'conformance');

/** The names and numbers the recordings use. */
const WORLD: ConformanceWorld = {
  bins: Object.fromEntries(FIXTURE_PROGRAMS.map((p) => [p, `/usr/local/libexec/ap-migrate-fixtures/${p}`])) as Record<FixtureProgram, string>,
  work: '/home/apm/work',
  port: 18080,
  shmKey: 0x5a001234,
  mqName: '/apm-conformance',
  uid: 1001,
};

/** A recording: its `## title` sections, each the text below the title (with a final newline). */
type Recording = ReadonlyMap<string, string>;

function readRecording(name: string): Recording {
  const [first = '', ...lines] = readFileSync(join(RECORDINGS, name), 'utf8').replace(/\n$/, '').split('\n');
  if (!first.startsWith(MARK) || !first.includes('NOT captured from a real host')) throw new Error(`${name} does not say it was written from documentation`);
  const sections = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of lines) {
    if (line.startsWith('## ')) sections.set(line.slice(3), (current = []));
    else if (current) current.push(line);
    else throw new Error(`${name}: text before the first section: ${line}`);
  }
  return new Map([...sections].map(([title, body]) => [title, body.length > 0 ? `${body.join('\n')}\n` : '']));
}

/** A section that must be there. */
function section(r: Recording, title: string): string {
  const text = r.get(title);
  if (text === undefined) throw new Error(`a recording has no "${title}" section`);
  return text;
}

/** The recordings of each kind, by their `argv` (launch) or program (attach). */
function loadRecordings(): { host: Recording; launches: Map<string, Recording>; attaches: Map<FixtureProgram, Recording> } {
  const launches = new Map<string, Recording>();
  const attaches = new Map<FixtureProgram, Recording>();
  for (const name of readdirSync(RECORDINGS)) {
    if (name.endsWith('.launch.txt')) {
      const r = readRecording(name);
      launches.set(section(r, 'argv').trim(), r);
    } else if (name.endsWith('.attach.txt')) {
      attaches.set(name.slice(0, -'.attach.txt'.length) as FixtureProgram, readRecording(name));
    }
  }
  return { host: readRecording('host.txt'), launches, attaches };
}

type Answer = Result<ExecResult, ApMigrateError>;

/** A command as recordings name it (its words joined by spaces); undefined when a word holds a space, so that no two argvs share a name. */
function titleOf(argv: readonly string[]): string | undefined {
  return argv.some((a) => /\s/.test(a)) ? undefined : argv.join(' ');
}

const done = (stdout: string, code = 0, stderr = ''): Answer => ok({ code, signal: null, stdout, stderr });

/**
 * The scripted host: an Executor over the recordings, and the {@link ConformanceHost} the suite
 * drives. `start(program)` makes that program's attach recording the running one.
 */
export function scriptedFreeBsdHost(): ConformanceHost & { executor: Executor } {
  const { host, launches, attaches } = loadRecordings();
  let running: Recording | undefined;
  let runningPid: number | undefined;
  /** Trace files made by mktemp: undefined until ktrace wrote the trace. */
  const traces = new Map<string, string | undefined>();
  const unexpected: string[] = [];
  let made = 0;

  const refuse = (argv: readonly string[], why: string): Answer => {
    unexpected.push(`${JSON.stringify(argv)}: ${why}`);
    return err(new ApMigrateError('UNEXPECTED_COMMAND', `The scripted FreeBSD host does not know ${JSON.stringify(argv)} (${why})`));
  };

  /** A command whose reply is a section of the host (or of the running program) named by its argv. */
  const fixed = (argv: readonly string[], from: Recording | undefined = host): Answer => {
    const title = titleOf(argv);
    const text = title === undefined ? undefined : from?.get(title);
    return text === undefined ? refuse(argv, 'not in the recordings') : done(text);
  };

  const ps = (argv: readonly string[]): Answer =>
    JSON.stringify(argv) === JSON.stringify(PS_ARGV) ? done(section(host, 'ps') + (running?.get('ps') ?? '')) : refuse(argv, 'not the ps columns the profiler reads');

  /** A fixture with SysV objects records the whole `ipcs -a` (its objects sit in the host's sections). */
  const ipcs = (argv: readonly string[]): Answer =>
    argv.join(' ') === 'ipcs -a' ? done(running?.get('ipcs -a') ?? section(host, 'ipcs -a')) : refuse(argv, 'only ipcs -a is recorded');

  const sockstat = (argv: readonly string[]): Answer => {
    const title = argv.join(' ');
    if (title !== 'sockstat -l' && title !== 'sockstat -c') return refuse(argv, 'only sockstat -l and -c are recorded');
    return done(section(host, title) + (running?.get(title) ?? ''));
  };

  const mktemp = (argv: readonly string[]): Answer => {
    if (argv.join(' ') !== 'mktemp -t ap-migrate-ktrace') return refuse(argv, 'not the mktemp of a trace file');
    const file = `/tmp/ap-migrate-ktrace.${String(++made).padStart(6, 'x')}`;
    traces.set(file, undefined);
    return done(`${file}\n`);
  };

  const rm = (argv: readonly string[]): Answer => {
    const file = argv[2];
    if (argv.length !== 3 || argv[1] !== '-f' || file === undefined || !traces.has(file)) return refuse(argv, 'removes something other than a trace file');
    traces.delete(file);
    return done('');
  };

  const kdump = (argv: readonly string[], opts: ExecOptions): Answer => {
    const file = argv.at(-1)!;
    const text = traces.get(file);
    if (argv.slice(0, -1).join(' ') !== 'kdump -H -n -d -f' || text === undefined) return refuse(argv, 'not the kdump of a trace ktrace wrote');
    if (opts.maxOutputBytes !== undefined && Buffer.byteLength(text) > opts.maxOutputBytes) return err(new ExecError('OUTPUT_TOO_LARGE', `kdump printed more than ${opts.maxOutputBytes} bytes`));
    return done(text);
  };

  const stat = (argv: readonly string[]): Answer => {
    if (argv.slice(0, 3).join('\0') !== ['stat', '-f', '%z %Sp %N'].join('\0')) return refuse(argv, "not stat -f '%z %Sp %N'");
    const listing = new Map(section(host, 'stat').split('\n').filter(Boolean).map((line) => [line.slice(line.indexOf('/')), line]));
    const unknown = argv.slice(3).filter((p) => !listing.has(p));
    if (unknown.length > 0) return refuse(argv, `stat of paths the host does not have: ${unknown.join(', ')}`);
    return done(argv.slice(3).map((p) => `${listing.get(p)}\n`).join(''));
  };

  /** `[timeout ...] ktrace -i -f <trace> ... -- <command>`: the launch recording with that exact argv. */
  const ktrace = async (argv: readonly string[], opts: ExecOptions): Promise<Answer> => {
    const file = argv[argv.indexOf('-f') + 1] ?? '';
    const title = titleOf(argv.map((a) => (a === file ? '{trace}' : a)));
    const recording = title === undefined ? undefined : launches.get(title);
    if (!recording || !traces.has(file)) return refuse(argv, 'no launch recording has this command and trace file');
    const cwd = recording.get('cwd')?.trim();
    if (opts.cwd !== cwd) return refuse(argv, `run in ${String(opts.cwd)}, the recording in ${String(cwd)}`);
    if (recording.get('runs')?.trim() === 'until aborted') return untilAborted(argv, opts);
    traces.set(file, recording.get('kdump') ?? '');
    const code = Number(section(recording, 'exit').trim());
    if (code !== 0 && !opts.allowNonZeroExit) return err(new ExecError('EXEC_NONZERO', `${argv.join(' ')} exited with ${code}`));
    return done('', code, recording.get('stderr') ?? '');
  };

  /** A program that runs until the caller aborts: the local executor's ABORTED then. */
  const untilAborted = (argv: readonly string[], opts: ExecOptions): Promise<Answer> | Answer => {
    const signal = opts.signal;
    if (!signal) return refuse(argv, 'runs until aborted, but no signal was given');
    return new Promise((resolve) => {
      const aborted = () => resolve(err(new ExecError('ABORTED', `Aborted: ${argv.join(' ')}`)));
      if (signal.aborted) return aborted();
      signal.addEventListener('abort', aborted, { once: true });
    });
  };

  const answer = async (argv: readonly string[], opts: ExecOptions): Promise<Answer> => {
    if (opts.signal?.aborted) return err(new ExecError('ABORTED', `Aborted before running ${argv.join(' ')}`));
    switch (argv[0]) {
      case 'uname':
      case 'id':
      case 'pwd':
      case 'which':
        return fixed(argv);
      case 'ipcs':
        return ipcs(argv);
      case 'ps':
        return ps(argv);
      case 'procstat':
        return fixed(argv, running);
      case 'sockstat':
        return sockstat(argv);
      case 'mktemp':
        return mktemp(argv);
      case 'timeout':
      case 'ktrace':
        return ktrace(argv, opts);
      case 'kdump':
        return kdump(argv, opts);
      case 'stat':
        return stat(argv);
      case 'rm':
        return rm(argv);
      default:
        return refuse(argv, 'no such command on the scripted host');
    }
  };

  const executor: Executor = {
    description: 'a scripted FreeBSD 13.2 host',
    exec: (argv, opts = {}) => new ResultAsync(answer(argv, opts)),
  };

  return {
    executor,
    async setup() {
      return WORLD;
    },
    async start(program, argv) {
      const recording = attaches.get(program);
      if (!recording) throw new Error(`no attach recording for ${program}`);
      const recorded = section(recording, 'argv').trim();
      if (recorded !== argv.join(' ')) throw new Error(`${program} is recorded running as "${recorded}", not "${argv.join(' ')}"`);
      running = recording;
      runningPid = Number(section(recording, 'pid').trim());
      // It ends only when a command stops it, and no such command is scripted.
      return { pid: runningPid, status: async () => ({ exitCode: null, signalCode: null }) };
    },
    async isRunning(pid) {
      // Launched programs ended with their ktrace command (or were stopped by its timeout).
      return pid === runningPid;
    },
    async cleanUp() {
      const left = [...unexpected.map((u) => `unexpected command ${u}`), ...[...traces.keys()].map((t) => `trace file ${t} not removed`)];
      unexpected.length = 0;
      traces.clear();
      running = undefined;
      runningPid = undefined;
      return left;
    },
    async teardown() {},
  };
}
