/**
 * A {@link Source} over any {@link Executor} (this machine, or a host reached over SSH): POSIX
 * `ps` and `kill`, so Linux and FreeBSD alike. Freezing is `SIGSTOP` of the whole tree, walked
 * again after each pass until no new process appears (a fork between the listing and the stop is
 * caught by the next pass).
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import { ApMigrateError, InvalidInputError, MigrationError } from '../errors.js';
import type { Executor } from '../spec/executor.js';
import type { Source } from '../spec/source.js';
import type { Transport } from '../spec/transport.js';
import { createLocalExecutor } from '../exec/local.js';

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

const STOP_SCRIPT = `
grace_ms="$1"; shift
kill -TERM "$@" 2>/dev/null; kill -CONT "$@" 2>/dev/null
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

/** A source reached through `executor` (default: this machine). */
export function createExecutorSource(given?: Executor): Source {
  // The local executor reads this machine, and so does a local transport (`local:DIR`).
  const isLocal = given === undefined || given.description === 'local' || (given as Partial<Transport>).kind === 'local';
  const executor = given ?? createLocalExecutor();
  const signal = (sig: string, pids: readonly number[]): ResultAsync<void, ApMigrateError> =>
    pids.length ? executor.exec(['kill', `-${sig}`, ...pids.map(String)], { allowNonZeroExit: true }).map(() => undefined) : okAsync(undefined);
  const processTree = (pid: number): ResultAsync<number[], ApMigrateError> => {
    const bad = checkPid(pid);
    if (bad) return errAsync(bad);
    return executor.exec(['ps', '-A', '-o', 'pid=', '-o', 'ppid='], {}).map((r) => treeFromPs(r.stdout, pid));
  };
  const freeze = (pid: number): ResultAsync<number[], ApMigrateError> => {
    const frozen = new Set<number>();
    const pass = (round: number): ResultAsync<number[], ApMigrateError> =>
      processTree(pid).andThen((tree) => {
        if (tree.length === 0 && frozen.size === 0) return errAsync(new MigrationError('SOURCE_GONE', `No process ${pid} runs on ${executor.description}`));
        const fresh = tree.filter((p) => !frozen.has(p));
        if (fresh.length === 0 || round >= 10) return okAsync([...frozen]);
        for (const p of fresh) frozen.add(p);
        return signal('STOP', fresh).andThen(() => pass(round + 1));
      });
    return pass(0);
  };
  return {
    description: executor.description,
    executor,
    isLocal,
    // A transport that streams (SSH) lets a packer run on this source and stream its bundle back.
    ...(streamingOf(executor) ? { stream: streamingOf(executor)! } : {}),
    processTree,
    freeze,
    thaw: (pids) => signal('CONT', pids),
    stop: (pid, graceMs = 5000) =>
      processTree(pid).andThen((tree) =>
        tree.length ? executor.exec(['sh', '-c', STOP_SCRIPT, 'ap-migrate', String(graceMs), ...tree.map(String)], { allowNonZeroExit: true }).map(() => undefined) : okAsync(undefined),
      ),
  };
}
