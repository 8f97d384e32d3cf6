/**
 * Addresses of a veth pair joining a program's own network stack to the destination host
 * (a Linux network namespace, a FreeBSD VNET jail).
 *
 * @module
 */
import { createHash } from 'node:crypto';

/** Addresses of the veth pair joining the program's network namespace to the destination host. */
export interface VethAddresses {
  /** Host side, CIDR, e.g. `10.231.7.1/30`. */
  host: string;
  /** Program side, CIDR, e.g. `10.231.7.2/30`. */
  program: string;
}

/** Default veth addresses: a /30 in 10.231.0.0/16 picked from a hash of the name. */
export function defaultVethAddresses(name: string): VethAddresses {
  const n = createHash('sha256').update(name).digest().readUInt16BE(0) % 16384;
  const third = Math.floor(n / 64);
  const fourth = (n % 64) * 4;
  return { host: `10.231.${third}.${fourth + 1}/30`, program: `10.231.${third}.${fourth + 2}/30` };
}
