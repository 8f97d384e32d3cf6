/**
 * Freezing with the cgroup freezer where the program has its own cgroup: a process tree (sh with
 * children that keep appending to a counter file) moved into a fresh v1 freezer cgroup, and into
 * a fresh cgroup v2 group, is frozen by it (no progress while frozen), thawed and stopped; a tree
 * in the root cgroup, and one whose cgroup also holds a foreign process, fall back to SIGSTOP.
 * Every cgroup made here is named apmg<random> and removed afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalExecutor } from '../../src/exec/local.js';
import { cgroupHoldsTree, freezerCandidates, parseCgroupMounts, parseFreezeOutput, parseProcCgroup } from '../../src/source/cgroup-freezer.js';
import { createExecutorSource } from '../../src/source/executor-source.js';
import type { Executor } from '../../src/spec/executor.js';
import { skipUnless } from '../helpers/requirements.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('cgroup freezer: reading the source host', () => {
  const mountinfo = [
    '30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
    '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
    '36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime shared:9 - cgroup cgroup rw,freezer',
    '40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
    '41 30 0:37 /sub /mnt/other\\040place rw - cgroup2 cgroup2 rw',
  ].join('\n');

  it('finds the v2 mount and the v1 freezer mount (of their hierarchy root only), escapes decoded', () => {
    expect(parseCgroupMounts(mountinfo)).toEqual({ v2: '/sys/fs/cgroup/unified', freezer: '/sys/fs/cgroup/freezer' });
    expect(parseCgroupMounts('50 1 0:40 / /srv/cg\\040two rw - cgroup2 none rw')).toEqual({ v2: '/srv/cg two' });
    expect(parseCgroupMounts('')).toEqual({});
  });

  it('reads a process cgroups; a path outside our cgroup namespace (/..) is refused', () => {
    expect(parseProcCgroup('9:name=systemd:/x\n6:freezer:/apmg1\n4:memory:/m\n0::/system.slice/a b.service\n')).toEqual({ freezer: '/apmg1', v2: '/system.slice/a b.service' });
    expect(parseProcCgroup('0::/../../elsewhere\n6:cpu,freezer:/f\n')).toEqual({ freezer: '/f' });
  });

  it('offers a cgroup only when every process shares it and it is not the root, v2 first', () => {
    const probe = (cgroups: Record<number, string>) => `@mountinfo\n${mountinfo}\n${Object.entries(cgroups).map(([p, text]) => `@pid ${p}\n${text}`).join('\n')}\n`;
    expect(freezerCandidates(probe({ 10: '6:freezer:/a\n0::/s\n', 11: '6:freezer:/a\n0::/s\n' }), [10, 11])).toEqual([
      { kind: 'cgroup-v2', dir: '/sys/fs/cgroup/unified/s' },
      { kind: 'cgroup-v1', dir: '/sys/fs/cgroup/freezer/a' },
    ]);
    expect(freezerCandidates(probe({ 10: '6:freezer:/\n0::/\n' }), [10])).toEqual([]); // the root is never frozen
    expect(freezerCandidates(probe({ 10: '6:freezer:/a\n0::/s\n', 11: '6:freezer:/b\n0::/\n' }), [10, 11])).toEqual([]);
    // A pid gone since the listing (no cgroup text) does not decide; none at all is no candidate.
    expect(freezerCandidates(probe({ 10: '6:freezer:/a\n0::/\n', 11: '' }), [10, 11])).toEqual([{ kind: 'cgroup-v1', dir: '/sys/fs/cgroup/freezer/a' }]);
    expect(freezerCandidates('', [10])).toEqual([]);
  });

  it('keeps a frozen cgroup only when it holds exactly the tree (zombies aside)', () => {
    expect(cgroupHoldsTree([1, 2, 3], [1, 2, 3], new Set([1, 2, 3]))).toBe(true);
    expect(cgroupHoldsTree([1, 2], [1, 2, 3], new Set([1, 2]))).toBe(true); // 3 is a zombie: it left its cgroup
    expect(cgroupHoldsTree([1, 2], [1, 2, 3], new Set([1, 2, 3]))).toBe(false); // 3 escaped: not frozen
    expect(cgroupHoldsTree([1, 2, 9], [1, 2], new Set([1, 2, 9]))).toBe(false); // 9 is foreign
    expect(parseFreezeOutput('frozen\nmember 4\nmember 5\n')).toEqual({ frozen: true, members: [4, 5] });
    expect(parseFreezeOutput('foreign 77\n')).toEqual({ frozen: false, reason: 'foreign 77' });
    expect(parseFreezeOutput('')).toEqual({ frozen: false, reason: 'no answer' });
  });
});

/** The local executor, recording every argv it runs. */
function recordingExecutor(): Executor & { argvs: string[][] } {
  const local = createLocalExecutor();
  const argvs: string[][] = [];
  return { description: 'local', argvs, exec: (argv, options) => (argvs.push([...argv]), local.exec(argv, options)) };
}

const V1_MOUNT = '/sys/fs/cgroup/freezer';
const V2_MOUNT = existsSync('/sys/fs/cgroup/unified/cgroup.procs') ? '/sys/fs/cgroup/unified' : '/sys/fs/cgroup';

/** True when a fresh child cgroup under the v2 mount has cgroup.freeze (Linux 5.2+) on this machine. */
function v2FreezeWorks(): boolean {
  if (process.getuid?.() !== 0 || !existsSync(join(V2_MOUNT, 'cgroup.procs'))) return false;
  const probe = join(V2_MOUNT, `apmg${randomBytes(6).toString('hex')}`);
  try {
    mkdirSync(probe);
    return existsSync(join(probe, 'cgroup.freeze'));
  } catch {
    return false;
  } finally {
    if (existsSync(probe)) rmdirSync(probe);
  }
}

describe.skipIf(skipUnless('root', 'tool:ps', 'tool:find'))('cgroup freezer on this machine', () => {
  const work = mkdtempSync(join(tmpdir(), 'apmg-freezer-'));
  const cgroups: string[] = [];
  const children: ChildProcess[] = [];

  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const dir of cgroups) {
      if (!existsSync(dir)) continue;
      // Thaw first, kill what is left, then remove (a cgroup with processes cannot be removed).
      for (const [file, value] of [['freezer.state', 'THAWED'], ['cgroup.freeze', '0']] as const) if (existsSync(join(dir, file))) writeFileSync(join(dir, file), value);
      for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      for (let i = 0; i < 50 && readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim() !== ''; i++) await sleep(100);
      rmdirSync(dir);
    }
    rmSync(work, { recursive: true, force: true });
  });

  function newCgroup(mount: string): string {
    const dir = join(mount, `apmg${randomBytes(6).toString('hex')}`);
    mkdirSync(dir);
    cgroups.push(dir);
    return dir;
  }

  /** sh (moved into `cgroup` first, when given) with two children appending to a counter file. */
  async function startTree(cgroup?: string): Promise<{ pid: number; counter: string }> {
    const counter = join(work, `counter-${randomBytes(4).toString('hex')}`);
    writeFileSync(counter, '');
    const script = '[ -z "$1" ] || echo $$ > "$1/cgroup.procs"; for n in 1 2; do (while :; do echo x >> "$2"; sleep 0.05; done) & done; wait';
    const child = spawn('sh', ['-c', script, 'sh', cgroup ?? '', counter], { stdio: 'ignore' });
    children.push(child);
    await growing(counter, true);
    return { pid: child.pid!, counter };
  }

  /** Whether the counter file grows within 600 ms. */
  async function growing(counter: string, wait = false): Promise<boolean> {
    const before = statSync(counter).size;
    for (let i = 0; i < (wait ? 50 : 6); i++) {
      await sleep(100);
      if (statSync(counter).size > before) return true;
    }
    return false;
  }

  const state = (pid: number) => /^State:\s*(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];

  it('a tree in its own v1 freezer cgroup is frozen by freezer.state, makes no progress, and runs on once thawed', async () => {
    const cgroup = newCgroup(V1_MOUNT);
    const tree = await startTree(cgroup);
    const executor = recordingExecutor();
    const source = createExecutorSource(executor);
    const frozen = (await source.freeze(tree.pid))._unsafeUnwrap();
    expect(frozen.freezer, frozen.freezerNote).toBe('cgroup-v1');
    expect(frozen).toContain(tree.pid);
    expect(frozen.length).toBeGreaterThanOrEqual(3); // sh and its two subshells (and a sleep or two)
    expect(JSON.stringify(frozen)).toBe(JSON.stringify([...frozen])); // `freezer` is not in the data
    expect(readFileSync(join(cgroup, 'freezer.state'), 'utf8').trim()).toBe('FROZEN');
    expect(state(tree.pid)).toBe('D'); // the v1 freezer's frozen tasks read as uninterruptible
    expect(await growing(tree.counter)).toBe(false);
    // It went through the executor: the cgroup directory as one argument of sh -c, no kill -STOP.
    expect(executor.argvs.some((a) => a[0] === 'sh' && a.includes(cgroup))).toBe(true);
    expect(executor.argvs.some((a) => a[0] === 'kill')).toBe(false);
    (await source.thaw(frozen))._unsafeUnwrap();
    expect(readFileSync(join(cgroup, 'freezer.state'), 'utf8').trim()).toBe('THAWED');
    expect(await growing(tree.counter)).toBe(true);
  });

  it('stop ends a tree frozen by its cgroup: SIGTERM is queued, the cgroup thawed, the tree gone', async () => {
    const cgroup = newCgroup(V1_MOUNT);
    const tree = await startTree(cgroup);
    const source = createExecutorSource();
    expect((await source.freeze(tree.pid))._unsafeUnwrap().freezer).toBe('cgroup-v1');
    (await source.stop(tree.pid, 2000))._unsafeUnwrap();
    for (let i = 0; i < 50 && readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').trim() !== ''; i++) await sleep(100);
    expect(readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').trim()).toBe('');
    expect(readFileSync(join(cgroup, 'freezer.state'), 'utf8').trim()).toBe('THAWED');
  });

  it.skipIf(!v2FreezeWorks())('a tree in its own cgroup v2 group is frozen by cgroup.freeze (cgroup.events frozen 1) and thawed', async () => {
    const cgroup = newCgroup(V2_MOUNT);
    const tree = await startTree(cgroup);
    const source = createExecutorSource();
    const frozen = (await source.freeze(tree.pid))._unsafeUnwrap();
    expect(frozen.freezer).toBe('cgroup-v2');
    expect(readFileSync(join(cgroup, 'cgroup.events'), 'utf8')).toContain('frozen 1');
    expect(await growing(tree.counter)).toBe(false);
    (await source.thaw(frozen))._unsafeUnwrap();
    expect(readFileSync(join(cgroup, 'cgroup.events'), 'utf8')).toContain('frozen 0');
    expect(await growing(tree.counter)).toBe(true);
    (await source.stop(tree.pid, 2000))._unsafeUnwrap();
  });

  it('a tree in the root cgroup falls back to SIGSTOP (state T), and SIGCONT thaws it', async () => {
    const tree = await startTree();
    const cgroupOf = readFileSync(`/proc/${tree.pid}/cgroup`, 'utf8');
    // Only meaningful where this test runs in the root cgroups (as here); elsewhere its cgroup holds the runner too: the same fallback.
    expect(cgroupOf).toMatch(/^0::\//m);
    const source = createExecutorSource();
    const frozen = (await source.freeze(tree.pid))._unsafeUnwrap();
    expect(frozen.freezer).toBe('sigstop');
    expect(frozen.freezerNote).toBe('no cgroup of its own');
    expect(state(tree.pid)).toBe('T');
    expect(await growing(tree.counter)).toBe(false);
    (await source.thaw(frozen))._unsafeUnwrap();
    expect(await growing(tree.counter)).toBe(true);
    (await source.stop(tree.pid, 2000))._unsafeUnwrap();
  });

  it('a cgroup that also holds a foreign process is not frozen: SIGSTOP of the tree, the foreign process untouched', async () => {
    const cgroup = newCgroup(V1_MOUNT);
    const foreign = spawn('sh', ['-c', 'echo $$ > "$1/cgroup.procs"; exec sleep 300', 'sh', cgroup], { stdio: 'ignore' });
    children.push(foreign);
    for (let i = 0; i < 50 && !readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').includes(String(foreign.pid)); i++) await sleep(50);
    const tree = await startTree(cgroup);
    const source = createExecutorSource();
    const frozen = (await source.freeze(tree.pid))._unsafeUnwrap();
    expect(frozen.freezer).toBe('sigstop');
    expect(frozen.freezerNote).toBe(`cgroup-v1 ${cgroup}: foreign ${foreign.pid}`);
    expect(frozen).not.toContain(foreign.pid);
    expect(readFileSync(join(cgroup, 'freezer.state'), 'utf8').trim()).toBe('THAWED');
    expect(state(tree.pid)).toBe('T');
    expect(state(foreign.pid!)).toBe('S');
    expect(await growing(tree.counter)).toBe(false);
    (await source.thaw(frozen))._unsafeUnwrap();
    expect(await growing(tree.counter)).toBe(true);
    (await source.stop(tree.pid, 2000))._unsafeUnwrap();
  });
});
