import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalTransport } from '../../src/transports/local.js';
import { runTransportConformance } from '../conformance/transport-suite.js';

runTransportConformance('local', async () => createLocalTransport());

describe('local transport root', () => {
  const root = mkdtempSync(join(tmpdir(), 'apm-local-root-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('runs commands in root and resolves relative paths against it', async () => {
    const transport = createLocalTransport({ root });
    writeFileSync(join(root, 'hello.txt'), 'hi');
    expect((await transport.exec(['pwd']))._unsafeUnwrap().stdout.trim()).toBe(root);
    expect((await transport.readFile('hello.txt'))._unsafeUnwrap().toString()).toBe('hi');
    (await transport.close())._unsafeUnwrap();
  });

  it('names a program that does not exist', async () => {
    const transport = createLocalTransport({ root });
    const error = (await transport.exec(['/nonexistent/apm-program']))._unsafeUnwrapErr();
    expect(error.code).toBe('EXEC_FAILED');
    expect(error.message).toContain('/nonexistent/apm-program');
  });
});
