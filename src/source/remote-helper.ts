/**
 * The helper program on a remote source: the same self-contained `receiver.cjs` the destination
 * runs, installed once per content hash in a directory only the source user owns, and run there to
 * profile and pack (`profile-pid`, `measure-trees`, `pack`).
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import { MigrationError, type ApMigrateError } from '../errors.js';
import { locateReceiver } from '../destination/receiver.js';
import type { Source } from '../spec/source.js';

// A directory only this user owns (never a link someone else planted), the file named by its hash.
const INSTALL_SCRIPT = `
umask 077
d="\${TMPDIR:-/tmp}/ap-migrate-$(id -u)"
mkdir -p "$d" && [ -O "$d" ] && [ ! -L "$d" ] && chmod 700 "$d" || { echo "unsafe helper directory $d" >&2; exit 3; }
f="$d/receiver-$1.cjs"
if [ "$2" = check ]; then [ -f "$f" ] && echo "present $f" || echo "absent $f"; exit 0; fi
cat > "$f.$$" && mv -f "$f.$$" "$f" && echo "present $f"
`;

/** The helper file on the source, installed when absent. */
export function installHelper(source: Source): ResultAsync<string, ApMigrateError> {
  const local = locateReceiver();
  if (!local) return errAsync(new MigrationError('SOURCE_CANNOT_PACK', 'dist/receiver.cjs not found: run `npm run build` (or set AP_MIGRATE_RECEIVER)'));
  const content = readFileSync(local);
  const hash = createHash('sha256').update(content).digest('hex').slice(0, 16);
  const run = (mode: 'check' | 'install', stdin?: Buffer) =>
    source.executor.exec(['sh', '-c', INSTALL_SCRIPT, 'ap-migrate', hash, mode], stdin ? { stdin } : {}).map((r) => r.stdout.trim().split('\n').pop() ?? '');
  const pathOf = (line: string) => line.slice(line.indexOf(' ') + 1);
  return run('check').andThen((line) => (line.startsWith('present ') ? okAsync(pathOf(line)) : run('install', content).map(pathOf)));
}

/**
 * The helper's one JSON reply line. `mapCode` may turn a remote error code into the local error it
 * stands for; otherwise it is `SOURCE_COMMAND_FAILED` naming the remote code.
 */
export function parseHelperReply<T>(text: string, what: string, mapCode?: (code: string, message: string) => ApMigrateError | undefined): ResultAsync<T, ApMigrateError> {
  const line = text.trim().split('\n').pop() ?? '';
  try {
    const reply = JSON.parse(line) as { ok: boolean; report?: T; error?: { code?: string; message?: string } };
    if (reply.ok && reply.report !== undefined) return okAsync(reply.report);
    const code = reply.error?.code;
    const mapped = code ? mapCode?.(code, reply.error?.message ?? '') : undefined;
    if (mapped) return errAsync(mapped);
    return errAsync(new MigrationError('SOURCE_COMMAND_FAILED', `${what} on the source failed: [${reply.error?.code ?? '?'}] ${reply.error?.message ?? 'unknown error'}`, { details: { sourceCode: reply.error?.code } }));
  } catch {
    return errAsync(new MigrationError('SOURCE_COMMAND_FAILED', `${what} on the source printed no reply: ${text.slice(-400)}`));
  }
}

