/**
 * The emulated wide-area link (test/helpers/wan.ts): 100 Mbit/s with 20 ms round trips must look
 * like that from inside the namespaces. Bounds are ratios of the nominal figures, so a loaded
 * machine moves them little; the link is the bottleneck by a wide margin at 100 Mbit/s.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipUnless } from '../helpers/requirements.js';
import { createWanLink, measureRtt, measureThroughput, WAN_NAME_PREFIX, type WanLink } from '../helpers/wan.js';

const MiB = 1024 * 1024;

describe.skipIf(skipUnless('root', 'tool:tc', 'tool:ip', 'tool:python3'))('emulated WAN link, 100 Mbit/s + 20 ms RTT', () => {
  let link: WanLink | undefined;

  beforeAll(async () => {
    link = await createWanLink({ rateMbit: 100, rttMs: 20 });
  });
  afterAll(async () => {
    const names = link ? [link.pair.source, link.pair.destination] : [];
    const pids = link?.delayLinePids() ?? [];
    if (link?.emulator === 'tbf+tun') expect(pids).toHaveLength(2);
    await link?.teardown();
    // Only what this file created: its own two namespaces (their veth and TUNs go with them)
    // and its own delay-line processes.
    const namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const name of names) expect(namespaces).not.toContain(name);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(link?.delayLinePids() ?? []).toEqual([]);
  });

  it('names everything it creates with the apmw prefix', () => {
    for (const name of [link!.pair.source, link!.pair.destination, link!.pair.sourceDevice, link!.pair.destinationDevice]) {
      expect(name.startsWith(WAN_NAME_PREFIX)).toBe(true);
    }
  });

  it('round trips from the source to the destination namespace take at least 18 ms', async () => {
    // A TCP echo rather than ping(8): iputils-ping is not among the system packages; both see the same delay.
    const rtts = await measureRtt(link!, 10);
    expect(rtts).toHaveLength(10);
    expect(Math.min(...rtts)).toBeGreaterThanOrEqual(18);
    // The delay is fixed, not a queue that grows: the median stays near the nominal RTT.
    expect([...rtts].sort((a, b) => a - b)[5]!).toBeLessThan(20 * 2);
  });

  it('a 20 MiB bulk TCP upload runs at 70%-105% of the nominal rate', async () => {
    const sample = await measureThroughput(link!, 20 * MiB);
    console.log(`wan-link: 20 MiB in ${sample.seconds.toFixed(2)} s = ${sample.mbit.toFixed(1)} Mbit/s (${(sample.ratio * 100).toFixed(0)}% of 100 Mbit/s, ${link!.emulator})`);
    expect(sample.ratio).toBeGreaterThanOrEqual(0.7);
    expect(sample.ratio).toBeLessThanOrEqual(1.05);
  });
});
