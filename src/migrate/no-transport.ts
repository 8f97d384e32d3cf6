/**
 * The transport of a method that reaches its destination itself (`esxi-vm` talks to vSphere):
 * every call is a typed error, so a method that wrongly uses it fails clearly.
 *
 * @module
 */
import { errAsync, okAsync } from 'neverthrow';
import { InvalidInputError } from '../errors.js';
import type { Transport } from '../spec/transport.js';

/** A {@link Transport} that refuses every operation, naming the method that needs none. */
export function noTransport(method: string): Transport {
  const refuse = () => errAsync(new InvalidInputError('migrate options', [{ path: 'destination', message: `${method} reaches its destination itself; no transport was given` }]));
  return {
    kind: 'local',
    root: '/',
    description: `(no transport: ${method})`,
    exec: refuse,
    upload: refuse,
    readFile: refuse,
    close: () => okAsync(undefined),
  };
}
