/**
 * The receiver: the small program the destination runs to unpack a bundle from stdin into a
 * staging directory with every safety check and hash verification of `unpackBundle`.
 * Built into one self-contained file (`dist/receiver.cjs`) that the deployer uploads, so the
 * destination needs only `node`, not the SDK.
 *
 *   node receiver.cjs unpack STAGING_DIR [--allow-devices] [--setuid=reject|strip|allow]
 *
 * Prints one JSON line: `{"ok":true,"report":{...}}` or `{"ok":false,"error":{code,message}}`.
 */
import { unpackBundle } from '../bundle/unpack.js';

async function main(argv: string[]): Promise<number> {
  const [command, staging, ...flags] = argv;
  if (command !== 'unpack' || !staging) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: { code: 'INVALID_INPUT', message: 'usage: receiver unpack STAGING_DIR' } })}\n`);
    return 2;
  }
  const setuidFlag = flags.find((f) => f.startsWith('--setuid='))?.slice('--setuid='.length);
  const result = await unpackBundle(process.stdin, staging, {
    allowDevices: flags.includes('--allow-devices'),
    ...(setuidFlag ? { setuid: setuidFlag as 'reject' | 'strip' | 'allow' } : {}),
  });
  if (result.isErr()) {
    const { code, message, isRetryable } = result.error;
    process.stdout.write(`${JSON.stringify({ ok: false, error: { code, message, isRetryable } })}\n`);
    return 1;
  }
  const r = result.value;
  process.stdout.write(
    `${JSON.stringify({
      ok: true,
      report: { stagingDir: r.stagingDir, bytesRead: r.bytesRead, dataBytes: r.dataBytes, verified: r.verified, entries: r.manifest?.entries.length ?? 0 },
    })}\n`,
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stdout.write(`${JSON.stringify({ ok: false, error: { code: 'RECEIVER_CRASHED', message: String(error) } })}\n`);
    process.exitCode = 1;
  },
);
