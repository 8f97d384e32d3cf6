/**
 * The Source conformance suite: what every {@link Source} must do, checked against real
 * processes on its host (started there through the source's own executor, so a remote source is
 * tested on the remote host). Call `sourceConformance(name, open)` inside a describe block.
 */
import { beforeAll, afterAll, expect, it } from 'vitest';
import type { Source } from '../../src/spec/source.js';

/** One Source under test. */
export interface SourceUnderTest {
  source: Source;
  /** Called after the suite (close transports...). */
  close?: () => Promise<void>;
}

/** Over SSH on a loaded machine every exec may take a second or more. */
const TIMEOUT = { timeout: 120_000 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Start `script` under sh on the source host, detached from the session; its pid there. */
async function startThere(source: Source, script: string): Promise<number> {
  const started = await source.executor.exec(['sh', '-c', 'sh -c "$1" </dev/null >/dev/null 2>&1 & echo "$!"', 'sh', script]);
  const pid = Number(started._unsafeUnwrap().stdout.trim());
  expect(pid).toBeGreaterThan(1);
  return pid;
}

/** The process state letter there (`S`, `R`, `T`, `Z`...), '' when it is gone. */
async function stateThere(source: Source, pid: number): Promise<string> {
  const probe = await source.executor.exec(['sh', '-c', 'sed -n "s/^State:[[:space:]]*\\(.\\).*/\\1/p" "/proc/$1/status" 2>/dev/null; true', 'sh', String(pid)]);
  return probe._unsafeUnwrap().stdout.trim();
}

/** Wait until `pid` is gone (or a zombie nobody reaped), at most `ms`. */
async function goneThere(source: Source, pid: number, ms = 5000): Promise<boolean> {
  for (const started = Date.now(); Date.now() - started < ms; await sleep(100)) {
    const state = await stateThere(source, pid);
    if (state === '' || state === 'Z') return true;
  }
  return false;
}

/** Register the suite's tests for the source `open` returns. */
export function sourceConformance(name: string, open: () => Promise<SourceUnderTest>): void {
  let under: SourceUnderTest;
  const started: number[] = [];
  beforeAll(async () => {
    under = await open();
  });
  afterAll(async () => {
    if (under && started.length) await under.source.executor.exec(['kill', '-KILL', ...started.map(String)], { allowNonZeroExit: true });
    await under?.close?.();
  });
  const start = async (script: string): Promise<number> => {
    const pid = await startThere(under.source, script);
    started.push(pid);
    return pid;
  };

  it(`${name}: processTree lists the root first, then its descendants`, TIMEOUT, async () => {
    const root = await start('sleep 300 & sleep 300 & wait');
    let tree: number[] = [];
    for (let i = 0; i < 30 && tree.length < 3; i++, await sleep(100)) tree = (await under.source.processTree(root))._unsafeUnwrap();
    expect(tree).toHaveLength(3);
    expect(tree[0]).toBe(root);
    started.push(...tree.slice(1));
    (await under.source.stop(root, 1000))._unsafeUnwrap();
    for (const pid of tree) expect(await goneThere(under.source, pid)).toBe(true);
  });

  it(`${name}: freeze stops the whole tree (state T), thaw lets it run again`, TIMEOUT, async () => {
    const root = await start('sleep 300 & wait');
    await sleep(300);
    const frozen = (await under.source.freeze(root))._unsafeUnwrap();
    expect(frozen).toContain(root);
    expect(frozen.length).toBe(2);
    // Started beside the executor's own processes, it has no cgroup of its own: SIGSTOP, as state T says.
    if (frozen.freezer !== undefined) expect(frozen.freezer).toBe('sigstop');
    started.push(...frozen);
    for (const pid of frozen) expect(await stateThere(under.source, pid)).toBe('T');
    (await under.source.thaw(frozen))._unsafeUnwrap();
    for (const pid of frozen) expect(['S', 'R']).toContain(await stateThere(under.source, pid));
    (await under.source.stop(root, 1000))._unsafeUnwrap();
  });

  it(`${name}: stop sends SIGTERM, and SIGKILL after the grace to a program that ignores it`, TIMEOUT, async () => {
    const polite = await start('sleep 300');
    await sleep(200);
    (await under.source.stop(polite, 5000))._unsafeUnwrap();
    expect(await goneThere(under.source, polite, 2000)).toBe(true);

    const stubborn = await start('trap "" TERM; while :; do sleep 0.1; done');
    await sleep(300);
    const t0 = Date.now();
    (await under.source.stop(stubborn, 600))._unsafeUnwrap();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
    expect(await goneThere(under.source, stubborn)).toBe(true);

    // A frozen program is stopped too (SIGCONT goes with SIGTERM).
    const frozen = await start('sleep 300');
    await sleep(200);
    (await under.source.freeze(frozen))._unsafeUnwrap();
    (await under.source.stop(frozen, 5000))._unsafeUnwrap();
    expect(await goneThere(under.source, frozen)).toBe(true);
  });

  it(`${name}: a pid that is gone is SOURCE_GONE for freeze, an empty tree, and a no-op stop`, TIMEOUT, async () => {
    const pid = await start('exit 0');
    expect(await goneThere(under.source, pid)).toBe(true);
    if ((await stateThere(under.source, pid)) === 'Z') return; // an unreaped zombie still has its pid
    expect((await under.source.freeze(pid))._unsafeUnwrapErr().code).toBe('SOURCE_GONE');
    expect((await under.source.processTree(pid))._unsafeUnwrap()).toEqual([]);
    expect((await under.source.stop(pid, 100)).isOk()).toBe(true);
  });

  it(`${name}: pid 1, 0, negatives and non-integers are INVALID_INPUT`, TIMEOUT, async () => {
    for (const bad of [1, 0, -5, 1.5, Number.NaN, 2 ** 40, '42' as unknown as number]) {
      expect((await under.source.processTree(bad))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
      expect((await under.source.freeze(bad))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
      expect((await under.source.stop(bad, 10))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    }
  });

  it(`${name}: stream hands back a command's stdout (when the source can stream)`, TIMEOUT, async () => {
    if (!under.source.stream) {
      expect(under.source.isLocal).toBe(true); // only a local source may lack it
      return;
    }
    const command = (await under.source.stream(['sh', '-c', 'cat; printf " and more"; echo done >&2'], { stdin: 'input' }))._unsafeUnwrap();
    const chunks: Buffer[] = [];
    for await (const chunk of command.stdout) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('input and more');
    expect((await command.exit)._unsafeUnwrap().stderr).toBe('done\n');
  });
}
