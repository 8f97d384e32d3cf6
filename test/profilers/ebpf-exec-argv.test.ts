/**
 * The argv (and executable) of an exec come from the exec line itself, not from /proc read when
 * the line is handled: a wrapper (env, setpriv, `sh -c 'exec ...'`) that execs again at once has
 * by then become the next program. Pure tests feed recorded bpftrace output lines with a /proc
 * that already shows the later program (as on a loaded machine); one real bpftrace run launches
 * such a chain while this process's event loop is kept busy, so the old behaviour always shows.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ProfileCollector } from '../../src/profilers/common.js';
import { createEbpfProfiler } from '../../src/profilers/ebpf.js';
import { EbpfEventTracker, parseEbpfLine, type ProcReader } from '../../src/profilers/ebpf-parser.js';
import { EBPF_MAX_EXEC_ARGS, generateEbpfScript } from '../../src/profilers/ebpf-script.js';
import { skipUnless } from '../helpers/requirements.js';

/** bpftrace's JSON line for one printf of the script. */
const line = (data: string) => JSON.stringify({ type: 'printf', data: `${data}\n` });

/** The lines sched_process_exec prints for one exec: its arguments, then the exec line. */
function execLines(pid: number, file: string, argv: string[], more = false): string[] {
  return [...argv.map((a, i) => line(`XA\t${pid}\t${pid}\t${i}\t${a}`)), line(`X\t${pid}\t${pid}\t${argv.length}\t${more ? 1 : 0}\t${file}`)];
}

/** A /proc that shows each process as it is *now* (after every exec), as a late read sees it. */
function procNow(pid: number, exe: string, argv: string[]): ProcReader {
  const files: Record<string, string> = { [`/proc/${pid}/cmdline`]: argv.map((a) => `${a}\0`).join(''), [`/proc/${pid}/status`]: `Tgid:\t${pid}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n` };
  return { readlink: (p) => ({ [`/proc/${pid}/exe`]: exe, [`/proc/${pid}/cwd`]: '/srv' })[p], readFile: (p) => files[p] };
}

/** The completeness notes the tracker's collector holds so far. */
const notesOf = (tracker: EbpfEventTracker): string[] => (tracker.collector as unknown as { notes: string[] }).notes;

function feed(tracker: EbpfEventTracker, lines: string[]): void {
  for (const l of lines) {
    const parsed = parseEbpfLine(l);
    if (parsed.isErr()) throw new Error(`${parsed.error.message}: ${parsed.error.line}`);
    if (parsed.value.kind === 'event') tracker.handle(parsed.value.event);
  }
}

const ENV_ARGV = ['env', 'EBPF_ARGV=1', '/bin/sh', '-c', 'exec sleep 5'];
const SH_ARGV = ['/bin/sh', '-c', 'exec sleep 5'];
const SLEEP_ARGV = ['sleep', '5'];

describe('ebpf exec lines carry their own argv', () => {
  it('decodes the argument lines and the exec line with its count', () => {
    const [arg, exec] = [line('XA\t7\t7\t1\tb\tc "d"'), line('X\t7\t7\t2\t1\t/usr/bin/x y')].map((l) => parseEbpfLine(l)._unsafeUnwrap());
    expect(arg).toEqual({ kind: 'event', event: { type: 'exec_arg', pid: 7, tid: 7, index: 1, arg: 'b\tc "d"', truncated: false } });
    expect(exec).toEqual({ kind: 'event', event: { type: 'exec', pid: 7, tid: 7, argc: 2, more: true, path: '/usr/bin/x y', truncated: false } });
  });

  it('a wrapper that exec\'d again before its line was handled: the launch has the wrapper\'s argv, the process its last one', () => {
    const proc = procNow(100, '/usr/bin/sleep', SLEEP_ARGV);
    const tracker = new EbpfEventTracker(new ProfileCollector(), 100, proc);
    tracker.seed(100);
    feed(tracker, [...execLines(100, '/usr/bin/env', ENV_ARGV), ...execLines(100, '/bin/sh', SH_ARGV), ...execLines(100, '/usr/bin/sleep', SLEEP_ARGV)]);
    expect(tracker.rootExecutable).toBe('/usr/bin/env');
    expect(tracker.rootArgv).toEqual(ENV_ARGV);
    expect(tracker.processes.get(100)).toMatchObject({ executable: '/usr/bin/sleep', argv: SLEEP_ARGV });
    expect(tracker.argvFromProc.size).toBe(0);
    expect(tracker.truncated).toEqual([]);
    // Every program of the chain ran: each one's file is an exec use.
    const { files } = tracker.collector.observed();
    for (const f of ['/usr/bin/env', '/bin/sh', '/usr/bin/sleep']) expect(files[f]?.access).toContain('exec');
  });

  it('replays a recorded run (env -> sh -c -> /bin/true child, exec sleep) handled after the whole tree had exited', () => {
    // bpftrace's fork, exec and exit lines of a real launch (the other lines left out).
    const recorded = readFileSync(path.join(import.meta.dirname, '../fixtures/ebpf-exec-argv/env-sh-sleep.jsonl'), 'latin1').trim().split('\n');
    const root = Number(/^XA\t(\d+)/.exec(JSON.parse(recorded[0]!).data)?.[1]);
    // By the time the lines are read every process is gone: /proc has nothing to say.
    const tracker = new EbpfEventTracker(new ProfileCollector(), root, { readlink: () => undefined, readFile: () => undefined });
    tracker.seed(root);
    feed(tracker, recorded);
    tracker.finish();
    expect(tracker.rootExecutable).toBe('/usr/bin/env');
    expect(tracker.rootArgv).toEqual(['env', 'EBPF_ARGV_TEST=1', '/bin/sh', '-c', '/bin/true short-lived "an arg"; exec sleep 0.5', 'name-of-sh']);
    expect([...tracker.processes.values()]).toEqual([
      { executable: '/usr/bin/sleep', argv: ['sleep', '0.5'] },
      { ppid: root, executable: '/bin/true', argv: ['/bin/true', 'short-lived', 'an arg'] },
    ]);
    expect(tracker.argvFromProc.size).toBe(0);
  });

  it("an argument line held back with its process's events (before the fork line) still belongs to its exec", () => {
    const files: Record<string, string> = { '/proc/100/status': 'Tgid:\t100\n', '/proc/101/status': 'Tgid:\t101\n', '/proc/101/cmdline': 'sleep\x005\x00' };
    const tracker = new EbpfEventTracker(new ProfileCollector(), 100, { readlink: (p) => (p === '/proc/100/cwd' ? '/' : undefined), readFile: (p) => files[p] });
    tracker.seed(100);
    // The child's lines come first (another CPU's buffer), then its parent's fork line.
    feed(tracker, [...execLines(101, '/bin/sh', SH_ARGV), line('F\t100\t100\t101')]);
    expect(tracker.processes.get(101)).toMatchObject({ executable: '/bin/sh', argv: SH_ARGV });
  });

  it('an exec line without its arguments falls back to /proc and says so', () => {
    const tracker = new EbpfEventTracker(new ProfileCollector(), 100, procNow(100, '/usr/bin/sleep', SLEEP_ARGV));
    tracker.seed(100);
    feed(tracker, [line('X\t100\t100\t-1\t0\t/usr/bin/env')]);
    expect(tracker.processes.get(100)).toMatchObject({ executable: '/usr/bin/env', argv: SLEEP_ARGV });
    expect(tracker.argvFromProc).toEqual(new Set([100]));
    expect(notesOf(tracker).join(' ')).toMatch(/arguments of pid 100's exec of \/usr\/bin\/env were not seen: .*\/proc\/100\/cmdline/);
    // No argument at all: the new stack could not be read (every program has one since Linux 5.18).
    const empty = new EbpfEventTracker(new ProfileCollector(), 100, procNow(100, '/usr/bin/sleep', SLEEP_ARGV));
    empty.seed(100);
    feed(empty, [line('X\t100\t100\t0\t0\t/usr/bin/env')]);
    expect(empty.argvFromProc).toEqual(new Set([100]));
  });

  it(`more than ${EBPF_MAX_EXEC_ARGS} arguments, or one cut: completed from /proc only when /proc still shows that exec`, () => {
    const many = ['prog', ...Array.from({ length: EBPF_MAX_EXEC_ARGS + 3 }, (_, i) => `a${i}`)];
    const long = ['prog', 'x'.repeat(300)];
    for (const [argv, seen] of [
      [many, many.slice(0, EBPF_MAX_EXEC_ARGS)],
      [long, ['prog', 'x'.repeat(199)]],
    ] as const) {
      // /proc shows this exec still: it completes the argv.
      const same = new EbpfEventTracker(new ProfileCollector(), 100, procNow(100, '/usr/bin/prog', [...argv]));
      same.seed(100);
      feed(same, execLines(100, '/usr/bin/prog', [...seen], argv.length > seen.length));
      expect(same.rootArgv).toEqual(argv);
      expect(same.truncated).toEqual([]);
      // The process exec'd something else meanwhile: only what the line holds, noted, incomplete.
      const later = new EbpfEventTracker(new ProfileCollector(), 100, procNow(100, '/usr/bin/sleep', SLEEP_ARGV));
      later.seed(100);
      feed(later, execLines(100, '/usr/bin/prog', [...seen], argv.length > seen.length));
      expect(later.rootArgv).toEqual(seen);
      expect(later.truncated.length).toBe(1);
      expect(notesOf(later).join(' ')).toMatch(/arguments of pid 100's exec of \/usr\/bin\/prog are incomplete/);
    }
  });

  it("the script reads argv from the new program's stack at sched_process_exec, or says it has none", () => {
    const events = new Set(['execve', 'execveat', 'getpriority'].flatMap((s) => [`sys_enter_${s}`, `sys_exit_${s}`]));
    const options = { seedPids: [1], markerPid: 2, markerNonce: 9_000_001, availableSyscallEvents: events, exitHasGroupDead: true };
    const block = (script: string) => script.split('\n\n').find((b) => b.startsWith('tracepoint:sched:sched_process_exec ')) ?? '';
    const withArgv = block(generateEbpfScript({ ...options, execArgv: true }));
    expect(withArgv).toContain('$sp = curtask->mm->start_stack;');
    expect(withArgv).toContain(`while ($i < ${EBPF_MAX_EXEC_ARGS})`);
    expect(withArgv).toContain('printf("XA\\t%d\\t%d\\t%d\\t%s\\n", pid, tid, $i, str(uptr(*(uint64*)uptr($sp + 8 + 8 * $i))));');
    expect(withArgv).toContain('printf("X\\t%d\\t%d\\t%d\\t%d\\t%s\\n", pid, tid, $i, $argc > $i ? 1 : 0, str(args->filename));');
    const without = block(generateEbpfScript(options));
    expect(without).not.toContain('curtask');
    expect(without).toContain('printf("X\\t%d\\t%d\\t-1\\t0\\t%s\\n", pid, tid, str(args->filename));');
  });
});

/** bpftrace processes this test process started running one of our generated programs. */
function ourBpftraces(): number[] {
  return readdirSync('/proc').filter((e) => {
    if (!/^\d+$/.test(e)) return false;
    try {
      const cmdline = readFileSync(`/proc/${e}/cmdline`, 'utf8');
      const status = readFileSync(`/proc/${e}/status`, 'utf8');
      // (Other test files, run in parallel, have bpftraces of their own.)
      const ours = Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]) === process.pid;
      return ours && cmdline.includes('bpftrace') && cmdline.includes('sys_enter_getpriority') && !/^State:\s+Z/m.test(status);
    } catch {
      return false;
    }
  }).map(Number);
}

/** Keep the event loop busy (200 ms of every 205) until stopped: bpftrace's lines are handled late. */
function hogEventLoop(): () => void {
  let on = true;
  const tick = (): void => {
    if (!on) return;
    for (const end = Date.now() + 200; Date.now() < end; );
    setTimeout(tick, 5);
  };
  setTimeout(tick, 0);
  return () => {
    on = false;
  };
}

describe.skipIf(skipUnless('root', 'tool:bpftrace'))('ebpf profiler: a launched wrapper that execs at once', () => {
  afterEach(() => {
    expect(ourBpftraces()).toEqual([]);
  });

  it('env -> sh -c exec -> sleep, handled late: the profile has the argv launched, each process its last exec', { timeout: 90_000 }, async () => {
    const command = ['env', 'EBPF_ARGV_TEST=1', '/bin/sh', '-c', '/bin/true short-lived "an arg"; exec sleep 1.5', 'name-of-sh'];
    const stop = hogEventLoop();
    let result;
    try {
      result = await createEbpfProfiler().profile({ command }, { durationMs: 30_000 });
    } finally {
      stop();
    }
    if (result.isErr()) throw result.error;
    const profile = result.value;
    expect(profile.executable).toBe('/usr/bin/env');
    expect(profile.argv).toEqual(command);
    const root = profile.processes.find((p) => p.argv?.[0] === 'sleep');
    expect(root?.argv).toEqual(['sleep', '1.5']);
    expect(root?.executable).toMatch(/^(\/usr)?\/bin\/sleep$/);
    expect(profile.processes.filter((p) => p.argv?.includes('EBPF_ARGV_TEST=1'))).toEqual([]);
    // A child gone long before its exec line is handled: its argv is still known.
    expect(profile.processes).toContainEqual(expect.objectContaining({ executable: '/bin/true', argv: ['/bin/true', 'short-lived', 'an arg'] }));
    expect(profile.processes).toHaveLength(2);
    expect(profile.completeness.notes.join(' ')).not.toMatch(/arguments of pid/);
    expect(profile.completeness.complete).toBe(true);
  });
});
