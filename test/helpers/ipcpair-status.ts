/**
 * The ipcpair fixture rewrites its status file with fopen("w") every 100 ms, so a read can land
 * between the truncate and the write and see an empty file. Read until a whole line is there.
 */
export interface IpcpairStatus {
  counter: number;
  segment: number;
}

export async function readIpcpairStatus(readText: () => string | Promise<string>, attempts = 40): Promise<IpcpairStatus> {
  let last = '';
  for (let i = 0; i < attempts; i++) {
    last = await readText();
    const match = /counter=(\d+) segment=(\d+)\n/.exec(last);
    if (match) return { counter: Number(match[1]), segment: Number(match[2]) };
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`ipcpair status never complete; last read ${JSON.stringify(last)}`);
}
