/**
 * shellQuoteArgv, the one shell-quoting function (every SSH command line and the ssh CLI
 * executor use it), checked against a real POSIX shell (/bin/sh): whatever argv goes in must
 * come back word for word. (Moved from test/exec/ssh-cli.test.ts, where it ran as quoteForShell.)
 */
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { shellQuoteArgv } from '../../src/transports/quote.js';

/** What /bin/sh makes of the quoted line: each word printed NUL-terminated. */
function throughShell(argv: readonly string[]): string[] {
  const out = execFileSync('/bin/sh', ['-c', `printf '%s\\0' ${shellQuoteArgv(argv)}`], { encoding: 'utf8' });
  const words = out.split('\0');
  words.pop();
  return words;
}

describe('shellQuoteArgv', () => {
  const cases: Record<string, string[]> = {
    spaces: ['a b', '  leading and trailing  ', 'tab\there'],
    'single quotes': ["it's", "'", "''", "a'b'c"],
    'double quotes and backslashes': ['say "hi"', '\\', 'back\\slash\\n', '"\\"'],
    newlines: ['line1\nline2', '\n', 'end\n'],
    'command substitution': ['$(id)', '`id`', '$HOME', '${PATH}', '$((1+1))'],
    separators: [';', 'a;b', 'a && b', 'a | b', 'a > /tmp/x', '&', '#comment'],
    unicode: ['héllo wörld', '日本語', '😀 emoji', 'ß'],
    globs: ['*', '?', '[a-z]', '~', '~root'],
    'empty and dashes': ['', '-n', '--', '-e'],
  };
  for (const [name, argv] of Object.entries(cases)) {
    it(`round-trips ${name} through /bin/sh`, () => {
      expect(throughShell(argv)).toEqual(argv);
    });
  }

  it('always quotes the command word, leaves other plain words bare and quotes the rest', () => {
    expect(shellQuoteArgv(['procstat', '-f', '4242', '/usr/local/bin/x'])).toBe("'procstat' -f 4242 /usr/local/bin/x");
    expect(shellQuoteArgv(['a b'])).toBe("'a b'");
    expect(shellQuoteArgv(["it's"])).toBe("'it'\\''s'");
    expect(shellQuoteArgv([''])).toBe("''");
    // `=` is quoted: a leading NAME=value word would otherwise be an assignment.
    expect(shellQuoteArgv(['env', 'X=1'])).toBe("'env' 'X=1'");
  });

  it('a command word that looks like an assignment or a reserved word is still run as a command', () => {
    const run = (shell: string, argv: string[]) =>
      execFileSync(shell, ['-c', `PATH=/nonexistent; ${shellQuoteArgv(argv)} 2>/dev/null; echo "status=$?"`], { encoding: 'utf8' });
    // Unquoted, `X=1` would be an assignment (status 0), `if` a syntax error.
    for (const shell of ['/bin/sh', '/bin/bash']) {
      for (const word of ['X=1', 'if', '{', '!', 'while']) expect(run(shell, [word])).toBe('status=127\n');
    }
  });

  it('round-trips arbitrary argv (property, 100 runs)', () => {
    // NUL cannot be in an argv word at all; everything else can.
    const word = fc.string({ unit: 'grapheme', maxLength: 12 }).filter((s) => !s.includes('\0'));
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 5 }), (argv) => {
        expect(throughShell(argv)).toEqual(argv);
      }),
      { numRuns: 100 },
    );
  });
});
