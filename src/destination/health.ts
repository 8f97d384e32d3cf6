/**
 * The health check of the Linux deployers: the program's process alive after a settle time and
 * listening again on every TCP port it listened on at the source.
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { DeployContext, StartedProgram } from '../spec/deployer.js';
import { DeployError } from './deploy-error.js';

const HEALTH_SCRIPT = `
pid="$1"; log="$2"; wait_ms="$3"; shift 3
i=0
while [ "$i" -lt "$wait_ms" ]; do
  # A zombie still answers kill -0, so read its state.
  state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  if [ -z "$state" ] || [ "$state" = Z ]; then echo "exited"; tail -c 2000 "$log" 2>/dev/null; exit 1; fi
  ok=1
  for port in "$@"; do
    hex=$(printf '%04X' "$port")
    grep -qiE "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null || ok=0
  done
  [ "$ok" = 1 ] && [ "$i" -ge 300 ] && { echo "healthy"; exit 0; }
  sleep 0.1; i=$((i + 100))
done
echo "timeout"; exit 2
`;

/**
 * Healthy means: the process is still alive 300 ms after start and listens on every TCP port it
 * listened on at the source (read from `/proc/net/tcp*`, as seen from `netnsExec`'s namespace).
 */
export function healthCheckCommon(
  context: DeployContext,
  started: StartedProgram,
  options: { timeoutMs?: number; wrap?: (argv: string[]) => string[] } = {},
): ResultAsync<void, ApMigrateError> {
  const ports = [...new Set(context.profile.sockets.filter((s) => s.listening && s.protocol === 'tcp' && s.localPort).map((s) => String(s.localPort)))];
  const argv = ['sh', '-c', HEALTH_SCRIPT, 'ap-migrate', String(started.pid), started.logPath, String(options.timeoutMs ?? 10_000), ...ports];
  return context.transport
    .exec(options.wrap ? options.wrap(argv) : argv, { allowNonZeroExit: true, ...(context.signal ? { signal: context.signal } : {}) })
    .mapErr((e) => new DeployError('HEALTH_CHECK_FAILED', `Health check failed: ${e.message}`, { cause: e }))
    .andThen((r) => {
      if (r.code === 0) return okAsync(undefined);
      const [verdict, ...rest] = r.stdout.split('\n');
      const what = verdict === 'exited' ? 'the program exited at the destination' : `the program is not listening on port(s) ${ports.join(', ')}`;
      return errAsync(new DeployError('HEALTH_CHECK_FAILED', `Health check failed: ${what}. ${rest.join('\n').trim().slice(0, 600)}`.trim()));
    });
}
