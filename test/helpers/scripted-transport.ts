/**
 * A scripted {@link Transport} for golden tests of destinations that do not exist here (FreeBSD):
 * it records every call (argv, uploaded content, stdin) exactly as a real transport would get it,
 * and answers from rules written from the tools' documented output. A command no rule answers is
 * an `EXEC_FAILED` error and is listed in `unmatched`, so a test never passes on a silent default.
 */
import type { Readable } from 'node:stream';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import { ApMigrateError } from '../../src/errors.js';
import type { ExecResult } from '../../src/spec/executor.js';
import type { Transport, TransportExecOptions, UploadOptions } from '../../src/spec/transport.js';
import { shellQuote } from '../../src/transports/quote.js';

/** What a scripted command prints and how it exits. */
export interface ScriptedReply {
  code?: number;
  stdout?: string;
  stderr?: string;
}

/** One rule: which command it answers and with what. The first matching rule with uses left wins. */
export interface ScriptedRule {
  /** An argv prefix, or a predicate on the whole argv. */
  match: readonly string[] | ((argv: readonly string[]) => boolean);
  /** A function gets stdin as text and (its first MiB) as bytes. */
  reply: ScriptedReply | ((argv: readonly string[], stdin: string | undefined, stdinBytes: Buffer | undefined) => ScriptedReply);
  /** Answer at most this many times (default: no limit). */
  times?: number;
}

/** One recorded call. */
export type RecordedCall =
  | { op: 'exec'; argv: string[]; stdinBytes?: number; stdinText?: string }
  | { op: 'upload'; path: string; mode: number; bytes: number; text: string }
  | { op: 'readFile'; path: string };

/** The scripted transport, with what it saw. */
export interface ScriptedTransport extends Transport {
  readonly calls: RecordedCall[];
  readonly unmatched: string[][];
  /** Add rules at the front (they win over earlier ones). */
  prepend(...rules: ScriptedRule[]): void;
}

/** Largest stdin or upload kept as text for assertions; the byte count is always exact. */
const KEEP_TEXT_BYTES = 1 << 20;

async function drain(input: Readable | Uint8Array | string): Promise<{ bytes: number; text: string; raw: Buffer }> {
  if (typeof input === 'string') return { bytes: Buffer.byteLength(input), text: input, raw: Buffer.from(input) };
  if (input instanceof Uint8Array) return { bytes: input.length, text: Buffer.from(input).toString('utf8'), raw: Buffer.from(input) };
  let bytes = 0;
  const kept: Buffer[] = [];
  for await (const chunk of input) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    bytes += buf.length;
    if (bytes <= KEEP_TEXT_BYTES) kept.push(buf);
  }
  const raw = Buffer.concat(kept);
  return { bytes, text: raw.toString('utf8'), raw };
}

function matches(rule: ScriptedRule, argv: readonly string[]): boolean {
  if (typeof rule.match === 'function') return rule.match(argv);
  const prefix = rule.match;
  return prefix.length <= argv.length && prefix.every((p, i) => argv[i] === p);
}

/** Create a scripted transport rooted at `root`. */
export function createScriptedTransport(options: { root: string; description?: string; rules: ScriptedRule[]; files?: Record<string, string> }): ScriptedTransport {
  const rules = options.rules.map((r) => ({ ...r, left: r.times ?? Number.POSITIVE_INFINITY }));
  const calls: RecordedCall[] = [];
  const unmatched: string[][] = [];
  const description = options.description ?? 'ssh://root@freebsd.test:22';

  const exec = (argv: readonly string[], execOptions: TransportExecOptions = {}): ResultAsync<ExecResult, ApMigrateError> => {
    if (execOptions.signal?.aborted) return errAsync(new ApMigrateError('ABORTED', 'aborted'));
    const call: RecordedCall = { op: 'exec', argv: [...argv] };
    calls.push(call);
    const stdin: ResultAsync<{ bytes: number; text: string; raw: Buffer } | undefined, ApMigrateError> = execOptions.stdin
      ? ResultAsync.fromSafePromise(drain(execOptions.stdin))
      : okAsync(undefined);
    return stdin.andThen((input) => {
      if (input) {
        call.stdinBytes = input.bytes;
        call.stdinText = input.text;
      }
      const rule = rules.find((r) => r.left > 0 && matches(r, argv));
      if (!rule) {
        unmatched.push([...argv]);
        return errAsync(new ApMigrateError('EXEC_FAILED', `scripted transport: no rule answers ${argv.slice(0, 4).join(' ')}`));
      }
      rule.left -= 1;
      const reply = typeof rule.reply === 'function' ? rule.reply(argv, input?.text, input?.raw) : rule.reply;
      const result: ExecResult = { code: reply.code ?? 0, signal: null, stdout: reply.stdout ?? '', stderr: reply.stderr ?? '' };
      if (result.code !== 0 && !execOptions.allowNonZeroExit) {
        return errAsync(new ApMigrateError('EXEC_NONZERO', `${argv[0]} exited with ${result.code}${result.stderr ? `: ${result.stderr.trim()}` : ''}`, { details: { argv, result } }));
      }
      return okAsync(result);
    });
  };

  return {
    kind: 'openssh',
    root: options.root,
    description,
    calls,
    unmatched,
    prepend: (...more) => rules.unshift(...more.map((r) => ({ ...r, left: r.times ?? Number.POSITIVE_INFINITY }))),
    exec,
    upload: (source: Readable, remotePath: string, uploadOptions: UploadOptions = {}) =>
      ResultAsync.fromSafePromise(drain(source)).map(({ bytes, text }) => {
        calls.push({ op: 'upload', path: remotePath, mode: uploadOptions.mode ?? 0o600, bytes, text });
        return { remotePath, bytes };
      }),
    readFile: (remotePath: string) => {
      calls.push({ op: 'readFile', path: remotePath });
      const content = options.files?.[remotePath];
      return content === undefined ? errAsync(new ApMigrateError('FILE_NOT_FOUND', `${remotePath} not scripted`)) : okAsync(Buffer.from(content));
    },
    close: () => okAsync(undefined),
  };
}

/**
 * Render recorded calls one per line for golden files: argv shell-quoted, long fixed texts (scripts)
 * replaced by `<NAME>` from `names`, stdin and uploads by their size.
 */
export function renderCalls(calls: readonly RecordedCall[], names: Readonly<Record<string, string>> = {}): string {
  const byText = new Map(Object.entries(names).map(([name, text]) => [text, name]));
  return calls
    .map((c) => {
      if (c.op === 'upload') return `upload ${c.path} mode=${c.mode.toString(8).padStart(4, '0')} bytes=${c.bytes}`;
      if (c.op === 'readFile') return `readFile ${c.path}`;
      const line = c.argv.map((a) => (byText.has(a) ? `<${byText.get(a)}>` : shellQuote(a))).join(' ');
      return c.stdinBytes !== undefined ? `${line} <stdin ${c.stdinBytes} bytes>` : line;
    })
    .join('\n')
    .concat('\n');
}
