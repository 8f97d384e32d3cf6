/**
 * Where one migrated program lives at the destination.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import type { Transport } from '../spec/transport.js';

/** Where things live at the destination for one migrated program. */
export interface DestinationLayout {
  /** `<root>/<name>`: the final install directory. */
  installDir: string;
  /** `<installDir>/root`: what the program sees as `/`. */
  rootDir: string;
  /** `<installDir>/run`: pid file and log, outside the program's root. */
  runDir: string;
  /** `<root>/.ap-migrate`: receiver and staging directories. */
  workDir: string;
}

/** Compute the layout for `name` under the transport's root. */
export function layoutFor(transport: Transport, name: string): DestinationLayout {
  const installDir = posix.join(transport.root, name);
  return {
    installDir,
    rootDir: posix.join(installDir, 'root'),
    runDir: posix.join(installDir, 'run'),
    workDir: posix.join(transport.root, '.ap-migrate'),
  };
}

/** A name usable as one directory and namespace component. */
export function isSafeName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name);
}

/** A fresh staging directory for one migration of `name` (random, so same-name migrations never share one). */
export function newStagingDir(transport: Transport, name: string): string {
  return posix.join(layoutFor(transport, name).workDir, `staging-${name}-${randomBytes(6).toString('hex')}`);
}
