/**
 * The `ap-migrate` command line.
 *
 *   ap-migrate plan PROFILE.json [--to-os freebsd --to-release 11.4-RELEASE --to-arch amd64] [--method M]... [--json]
 *
 * Exit codes: 0 success, 1 the operation failed, 2 bad usage.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { formatPlan, planMigration } from '../policy/index.js';

const USAGE = `usage:
  ap-migrate plan PROFILE.json [--json] [--method ID]... [--forbid ID]...
                  [--to-os OS --to-release RELEASE --to-arch ARCH] [--size KEY=BYTES]...`;

async function planCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      method: { type: 'string', multiple: true },
      forbid: { type: 'string', multiple: true },
      'to-os': { type: 'string' },
      'to-release': { type: 'string' },
      'to-arch': { type: 'string' },
      size: { type: 'string', multiple: true },
    },
  });
  const file = positionals[0];
  if (!file) {
    console.error(USAGE);
    return 2;
  }
  const text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
  const sizes: Record<string, number> = {};
  for (const pair of values.size ?? []) {
    const [key, bytes] = pair.split('=');
    sizes[key ?? ''] = Number(bytes);
  }
  const toPlatform =
    values['to-os'] || values['to-release'] || values['to-arch']
      ? { os: values['to-os'] ?? '', release: values['to-release'] ?? '', arch: values['to-arch'] ?? '' }
      : undefined;
  const result = planMigration(text, {
    ...(values.method ? { allowedMethods: values.method } : {}),
    forbiddenMethods: values.forbid ?? [],
    destination: { ...(toPlatform ? { platform: toPlatform } : {}), provides: [] },
    sizes,
  });
  if (result.isErr()) {
    if (values.json) console.log(JSON.stringify({ error: result.error.toJSON() }, null, 2));
    else console.error(`error [${result.error.code}]: ${result.error.message}`);
    return 1;
  }
  console.log(values.json ? JSON.stringify(result.value, null, 2) : formatPlan(result.value));
  return 0;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'plan':
      return planCommand(rest);
    case undefined:
    case '-h':
    case '--help':
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    default:
      console.error(`unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error));
    process.exitCode = 2;
  },
);
