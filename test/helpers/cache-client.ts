/**
 * A memcached text-protocol client as a bash script (bash's `/dev/tcp`: no client tool needed),
 * for the real-daemon tests that ask a moved cache to answer.
 */

/** The commands of a set of `key` to `hello` and a get of it, or of a get alone. */
function requests(key: string, set: boolean): string {
  if (!/^[A-Za-z0-9]+$/.test(key)) throw new Error(`cache key must be alphanumeric: ${key}`);
  return `${set ? `set ${key} 0 0 5\\r\\nhello\\r\\n` : ''}get ${key}\\r\\nquit\\r\\n`;
}

/**
 * A script for `bash -c` (no single quote in it) that sends the requests to 127.0.0.1:`port` and
 * prints the replies: `STORED`, `VALUE <key> 0 5`, `hello`, `END` for a set and get.
 */
export function cacheScript(key: string, port: number, options: { set?: boolean } = {}): string {
  return `exec 3<>/dev/tcp/127.0.0.1/${port}; printf "${requests(key, options.set ?? true)}" >&3; cat <&3`;
}

/** The argv that runs {@link cacheScript} (a set and a get) inside network namespace `netns`, 5 s at most. */
export function cacheArgvInNetns(netns: string, key: string, port: number): string[] {
  if (!/^[A-Za-z0-9_.-]+$/.test(netns)) throw new Error(`unexpected namespace name: ${netns}`);
  return ['ip', 'netns', 'exec', netns, 'timeout', '5', 'bash', '-c', cacheScript(key, port)];
}

/** {@link cacheArgvInNetns} as one shell command line (the script single-quoted: it holds no single quote). */
export function cacheCommandInNetns(netns: string, key: string, port: number): string {
  const argv = cacheArgvInNetns(netns, key, port);
  return `${argv.slice(0, -1).join(' ')} '${argv.at(-1)}'`;
}
