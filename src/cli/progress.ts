/**
 * A one-line progress display on stderr (a bar when the total is known).
 *
 * @module
 */

/** Render `done/total` as a bar of `width` cells. */
export function progressBar(done: number, total: number, width = 30): string {
  const fraction = total > 0 ? Math.min(1, done / total) : 0;
  const filled = Math.round(fraction * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%`;
}

/** Writes progress lines over each other when stderr is a terminal, else one line per update at most every second. */
export function createProgressLine(): { update(text: string): void; done(): void } {
  const tty = process.stderr.isTTY;
  let last = 0;
  return {
    update(text) {
      const now = Date.now();
      if (tty) process.stderr.write(`\r\x1b[K${text}`);
      else if (now - last >= 1000) {
        process.stderr.write(`${text}\n`);
        last = now;
      }
    },
    done() {
      if (tty) process.stderr.write('\r\x1b[K');
    },
  };
}
