/**
 * A {@link Source} over any {@link Executor} (this machine, or a host reached over SSH): POSIX
 * `ps` and `kill`, so Linux and FreeBSD alike. Freezing uses the program's own cgroup where it has
 * one (every process of the tree in one non-root cgroup, v2 or the v1 freezer, holding nothing
 * else: see `cgroup-freezer.ts`); otherwise it is `SIGSTOP` of the whole tree, walked again after
 * each pass until no new process appears (a fork between the listing and the stop is caught by
 * the next pass).
 *
 * @module
 */
import { err, errAsync, ok, okAsync, ResultAsync, type Result } from 'neverthrow';
import { ApMigrateError, InvalidInputError, MigrationError } from '../errors.js';
import type { Executor } from '../spec/executor.js';
import type { FreezerKind, FrozenPids, Source } from '../spec/source.js';
import type { Transport } from '../spec/transport.js';
import { createLocalExecutor } from '../exec/local.js';
import { cgroupHoldsTree, freezeCgroup, freezerFile, livePids, probeFreezerCandidates, thawCgroup, type CgroupFreezerKind, type FrozenCgroup } from './cgroup-freezer.js';

function checkPid(pid: unknown): InvalidInputError | undefined {
  return typeof pid === 'number' && Number.isInteger(pid) && pid > 1 && pid <= 2 ** 31 - 1 ? undefined : new InvalidInputError('source pid', [{ path: 'pid', message: 'must be an integer pid above 1' }]);
}

/** `root` and its descendants (root first) from `ps -A -o pid= -o ppid=` output; empty when root is gone. */
export function treeFromPs(psOutput: string, root: number): number[] {
  const children = new Map<number, number[]>();
  const alive = new Set<number>();
  for (const line of psOutput.split('\n')) {
    const [pid, ppid] = line.trim().split(/\s+/).map(Number);
    if (!pid || ppid === undefined || Number.isNaN(ppid)) continue;
    alive.add(pid);
    children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  }
  if (!alive.has(root)) return [];
  const out: number[] = [];
  const seen = new Set<number>();
  const queue = [root];
  while (queue.length) {
    const p = queue.shift()!;
    if (seen.has(p)) continue;
    seen.add(p);
    out.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return out;
}

// A tree frozen by its cgroup gets SIGTERM queued, then the cgroup thawed ($2 is its freezer
// file, $3 the thawing value; both empty otherwise), so the signal is the first thing it sees.
const STOP_SCRIPT = `
grace_ms="$1"; thaw_file="$2"; thaw_value="$3"; shift 3
kill -TERM "$@" 2>/dev/null
[ -z "$thaw_file" ] || [ ! -e "$thaw_file" ] || printf '%s\\n' "$thaw_value" > "$thaw_file"
kill -CONT "$@" 2>/dev/null
i=0
while [ "$i" -lt "$grace_ms" ]; do
  alive=0; for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && exit 0
  sleep 0.1; i=$((i + 100))
done
kill -KILL "$@" 2>/dev/null
exit 0
`;

/** The executor's `stream`, when it is a transport that has one. */
function streamingOf(executor: Executor): Source['stream'] | undefined {
  const candidate = executor as Partial<Transport>;
  return typeof candidate.stream === 'function' ? candidate.stream.bind(executor) : undefined;
}

/** `pids` as {@link FrozenPids}: the array, with how it was frozen as a non-enumerable `freezer`. */
export function frozenPids(pids: readonly number[], freezer: FreezerKind, note?: string): FrozenPids {
  const frozen = Object.defineProperty([...pids], 'freezer', { value: freezer, enumerable: false });
  return (note ? Object.defineProperty(frozen, 'freezerNote', { value: note, enumerable: false }) : frozen) as FrozenPids;
}

/**
 * `SIGSTOP` of the whole tree, listed again after each pass until no new process appears (at most
 * 10 passes); the first pass stops `listed`, the tree as just listed.
 */
function sigstopFreeze(executor: Executor, processTree: (pid: number) => ResultAsync<number[], ApMigrateError>, pid: number, listed: number[]): ResultAsync<number[], ApMigrateError> {
  const frozen = new Set<number>();
  const pass = (round: number): ResultAsync<number[], ApMigrateError> =>
    (round === 0 ? okAsync<number[], ApMigrateError>(listed) : processTree(pid)).andThen((tree) => {
      if (tree.length === 0 && frozen.size === 0) return errAsync(new MigrationError('SOURCE_GONE', `No process ${pid} runs on ${executor.description}`));
      const fresh = tree.filter((p) => !frozen.has(p));
      if (fresh.length === 0 || round >= 10) return okAsync([...frozen]);
      for (const p of fresh) frozen.add(p);
      return signalPids(executor, 'STOP', fresh).andThen(() => pass(round + 1));
    });
  return pass(0);
}

function signalPids(executor: Executor, sig: string, pids: readonly number[]): ResultAsync<void, ApMigrateError> {
  return pids.length ? executor.exec(['kill', `-${sig}`, ...pids.map(String)], { allowNonZeroExit: true }).map(() => undefined) : okAsync(undefined);
}

/** The tree of `pid` and its live (non-zombie) pids, listed on the source host. */
function liveTree(executor: Executor, pid: number): ResultAsync<{ tree: number[]; live: Set<number> }, ApMigrateError> {
  return executor.exec(['ps', '-A', '-o', 'pid=', '-o', 'ppid=', '-o', 'stat='], {}).map((r) => ({ tree: treeFromPs(r.stdout, pid), live: livePids(r.stdout) }));
}

/**
 * A cgroup that froze the tree, or why none did (the notes of every candidate tried), and whether
 * a race with the program's own forks may have been the reason (worth one more try).
 */
type CgroupFreezeOutcome = FrozenCgroup | { notes: string[]; racy: boolean };

/** Reasons a fork racing the freeze can cause: the v1 freezer still FREEZING, the members changed. */
const RACY_NOTE = /: (timeout|frozen members .*)$/;

/**
 * Freeze `pid`'s tree by cgroup `candidate` if it holds nothing else, and keep it frozen only if,
 * once frozen, it holds exactly the tree's live processes (else it is thawed again). A note says
 * why when it did not freeze the tree. An error after the freeze may have happened thaws it first.
 */
async function freezeByCandidate(executor: Executor, pid: number, tree: readonly number[], candidate: { kind: CgroupFreezerKind; dir: string }): Promise<Result<FrozenCgroup | string, ApMigrateError>> {
  const note = (why: string) => `${candidate.kind} ${candidate.dir}: ${why}`;
  const tried = await freezeCgroup(executor, candidate.kind, candidate.dir, tree);
  if (tried.isOk() && !tried.value.frozen) return ok(note(tried.value.reason));
  const after = tried.isOk() ? await liveTree(executor, pid) : err<never, ApMigrateError>(tried.error);
  const members = tried.isOk() && tried.value.frozen ? tried.value.members : [];
  if (after.isOk() && after.value.tree.length > 0 && cgroupHoldsTree(members, after.value.tree, after.value.live)) {
    return ok({ ...candidate, pids: after.value.tree });
  }
  const thawed = await thawCgroup(executor, candidate);
  if (after.isErr()) return err(after.error);
  const why = `frozen members ${members.join(',') || 'none'} are not the tree ${after.value.tree.join(',') || 'none'}`;
  return thawed.isErr() ? err(thawed.error) : ok(note(why));
}

/**
 * Try to freeze `pid`'s tree by its own cgroup, v2 first, then the v1 freezer. Notes when no
 * cgroup froze it (none of its own, a foreign process in it, no freezer): the caller uses SIGSTOP.
 */
function cgroupFreeze(executor: Executor, pid: number, tree: readonly number[]): ResultAsync<CgroupFreezeOutcome, ApMigrateError> {
  return probeFreezerCandidates(executor, tree).andThen((candidates) =>
    candidates.reduce<ResultAsync<CgroupFreezeOutcome, ApMigrateError>>(
      (previous, candidate) =>
        previous.andThen((done) => {
          if (!('notes' in done)) return okAsync(done);
          return new ResultAsync(freezeByCandidate(executor, pid, tree, candidate)).map((r) => (typeof r === 'string' ? { notes: [...done.notes, r], racy: done.racy || RACY_NOTE.test(r) } : r));
        }),
      okAsync<CgroupFreezeOutcome, ApMigrateError>({ notes: candidates.length ? [] : ['no cgroup of its own'], racy: false }),
    ),
  );
}

/** A source reached through `executor` (default: this machine). */
export function createExecutorSource(given?: Executor): Source {
  // The local executor reads this machine, and so does a local transport (`local:DIR`).
  const isLocal = given === undefined || given.description === 'local' || (given as Partial<Transport>).kind === 'local';
  const executor = given ?? createLocalExecutor();
  // Trees this source froze by their cgroup, by root pid: thaw and stop thaw the cgroup.
  const byCgroup = new Map<number, FrozenCgroup>();
  const processTree = (pid: number): ResultAsync<number[], ApMigrateError> => {
    const bad = checkPid(pid);
    if (bad) return errAsync(bad);
    return executor.exec(['ps', '-A', '-o', 'pid=', '-o', 'ppid='], {}).map((r) => treeFromPs(r.stdout, pid));
  };
  // A racy miss is tried once more with the tree listed again, before SIGSTOP (which the program can see).
  const freezeTry = (pid: number, attempt: number): ResultAsync<FrozenPids, ApMigrateError> =>
    processTree(pid).andThen((tree) => {
      if (tree.length === 0) return errAsync(new MigrationError('SOURCE_GONE', `No process ${pid} runs on ${executor.description}`));
      return cgroupFreeze(executor, pid, tree).andThen((cgroup) => {
        if ('notes' in cgroup && cgroup.racy && attempt < 2) return freezeTry(pid, attempt + 1);
        if ('notes' in cgroup) return sigstopFreeze(executor, processTree, pid, tree).map((pids) => frozenPids(pids, 'sigstop', cgroup.notes.join('; ')));
        byCgroup.set(pid, cgroup);
        return okAsync(frozenPids(cgroup.pids, cgroup.kind));
      });
    });
  const freeze = (pid: number) => freezeTry(pid, 1);
  const thaw = (pids: readonly number[]): ResultAsync<void, ApMigrateError> => {
    const mine = [...byCgroup].filter(([, c]) => c.pids.some((p) => pids.includes(p)));
    const covered = new Set(mine.flatMap(([, c]) => c.pids));
    const thawAll = mine.reduce<ResultAsync<void, ApMigrateError>>((chain, [root, c]) => chain.andThen(() => thawCgroup(executor, c)).map(() => void byCgroup.delete(root)), okAsync(undefined));
    return thawAll.andThen(() => signalPids(executor, 'CONT', pids.filter((p) => !covered.has(p))));
  };
  const stop = (pid: number, graceMs = 5000): ResultAsync<void, ApMigrateError> =>
    processTree(pid).andThen((tree) => {
      const cgroup = byCgroup.get(pid);
      byCgroup.delete(pid);
      const thawArgs = cgroup ? [`${cgroup.dir}/${freezerFile(cgroup.kind).file}`, freezerFile(cgroup.kind).thawed] : ['', ''];
      if (!tree.length) return cgroup ? thawCgroup(executor, cgroup) : okAsync(undefined);
      return executor.exec(['sh', '-c', STOP_SCRIPT, 'ap-migrate', String(graceMs), ...thawArgs, ...tree.map(String)], { allowNonZeroExit: true }).map(() => undefined);
    });
  return {
    description: executor.description,
    executor,
    isLocal,
    // A transport that streams (SSH) lets a packer run on this source and stream its bundle back.
    ...(streamingOf(executor) ? { stream: streamingOf(executor)! } : {}),
    processTree,
    freeze,
    thaw,
    stop,
  };
}
