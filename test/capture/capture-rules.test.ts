/**
 * The capture's config and data-root rules on a fake source host (test/capture/fake-host.ts: a
 * directory standing for `/`, a small dpkg database, its own passwd and group), no daemon:
 *
 * - only the config the program opened itself and the `/etc` files of its own packages (the
 *   executable's package and those built from the same source package) are read for paths and
 *   account names; a dependency's `/etc` files travel but what they name does not (a user tool's
 *   home and skeleton directories, another service's data);
 * - a directory the program writes into is a data root even when a config file named it first,
 *   in the capture's trees and in the reasons table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captureProgram, summarizeReasons, type ResourceProfile } from '../../src/index.js';
import { absolutePathsIn, configWordsIn } from '../../src/capture/scan.js';
import { ResourceProfileSchema, type FileUse } from '../../src/policy/profile.js';
import { createFakeHost, type FakeHost } from './fake-host.js';

let host: FakeHost;

beforeAll(() => {
  host = createFakeHost({
    packages: {
      // The program: its binary package, and the -common package (same source) holding its config.
      appd: {
        source: 'appd',
        depends: ['appd-common (= 1.0-1)', 'usertool', 'libfoo1 (>= 1.2) | libfoo-alt'],
        files: {
          '/usr/sbin/appd': 'appd binary\n',
          '/etc/default/appd': 'APPD_OPTS=""\n',
          // An init script: the paths in it go on with a variable (not the directories), and it sources a dependency's file.
          '/etc/init.d/appd': '#!/bin/sh\nNAME=appd\nDAEMON=/usr/sbin/appd\nPIDFILE=/run/$NAME.pid\nSCRIPT=/etc/init.d/$NAME\n[ -r /etc/default/usertool ] && . /etc/default/usertool\n',
        },
      },
      'appd-common': {
        source: 'appd',
        files: {
          '/etc/appd/appd.conf': '# appd config\n# user nobody;\nuser appuser;\nlog_dir /var/log/appd;\ninclude /etc/appd/conf.d/*.conf;\nstate_dir /srv/appd;\n',
          '/etc/appd/conf.d/tuning.conf': 'workers 2;\n',
        },
      },
      // A dependency from another source: a user-management tool whose config names homes, the skeleton and another service's data.
      usertool: {
        source: 'usertool',
        files: {
          '/usr/sbin/usertool': 'usertool binary\n',
          '/etc/usertool.conf': '# where homes go\nDHOME=/srv/homes\nSKEL=/etc/skel\nSYSTEM_USER=otheruser\n',
          '/etc/default/usertool': 'CACHE=/var/lib/otherdb\nOWNER=otheruser\n',
        },
      },
      // A wrapper from another package that drops privileges and execs the program (setpriv-like).
      wraptool: {
        source: 'wraptool',
        files: { '/usr/bin/wrapper': 'wrapper binary\n', '/usr/share/wraptool/messages': 'messages\n' },
      },
      libfoo1: {
        source: 'foo',
        files: { '/usr/lib/x86_64-linux-gnu/libfoo.so.1': 'library\n', '/usr/share/foo/table.dat': 'shared data\n' },
      },
    },
    files: {
      '/srv/homes/otheruser/private.txt': 'another account\'s file\n',
      '/etc/skel/.profile': 'skeleton\n',
      '/var/lib/otherdb/data.db': 'another service\'s data\n',
      '/etc/init.d/otherdb': '#!/bin/sh\n# another service\'s init script\n',
      '/var/log/appd/appd.log': 'log line\n',
      '/srv/appd/state/appd.db': 'state\n',
    },
    passwd: [
      'root:x:0:0:root:/root:/bin/sh',
      'bin:x:2:2:bin:/bin:/usr/sbin/nologin',
      'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
      'appuser:x:1001:1001::/srv/appd:/usr/sbin/nologin',
      'otheruser:x:1002:1002::/srv/homes/otheruser:/bin/sh',
      '',
    ].join('\n'),
    group: ['root:x:0:', 'bin:x:2:', 'nogroup:x:65534:', 'appuser:x:1001:', 'otheruser:x:1002:', ''].join('\n'),
  });
});

afterAll(() => host?.remove());

const use = (path: string, access: FileUse['access'], reason: 'traced' | 'held-open', kind: FileUse['kind'] = 'regular'): Partial<FileUse> => ({ path, kind, access, size: 0, reasons: [reason] });

/** A profile of appd as a profiler gives it: its executable, the files it used, uid 0. */
function profileOf(files: Array<Partial<FileUse>>): ResourceProfile {
  return ResourceProfileSchema.parse({
    executable: '/usr/sbin/appd',
    argv: ['/usr/sbin/appd'],
    cwd: '/',
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6.1.0', arch: 'x86_64' },
    files: [use('/usr/sbin/appd', ['exec'], 'traced'), ...files],
    completeness: { complete: false, notes: [] },
  });
}

/** Writes its log and its state (what an attach sees held open). */
const WRITES = [use('/var/log/appd/appd.log', ['write'], 'held-open'), use('/srv/appd/state/appd.db', ['read', 'write'], 'held-open')];
/** Launched: it also read its config and the account database (to drop to appuser). */
const LAUNCH_READS = [use('/etc/appd/appd.conf', ['read'], 'traced'), use('/etc/appd/conf.d/tuning.conf', ['read'], 'traced'), use('/etc/passwd', ['read'], 'traced')];

async function capture(profile: ResourceProfile): Promise<ResourceProfile> {
  const r = await captureProgram(profile, host.executor);
  if (r.isErr()) throw r.error;
  return r.value;
}

const treeOf = (p: ResourceProfile, path: string) => p.trees.find((t) => t.path === path);
/** Directories of other accounts and services that appd's dependencies (or /etc/passwd, or a path template) name. */
const OTHERS = ['/srv/homes', '/srv/homes/otheruser', '/etc/skel', '/var/lib/otherdb', '/etc/init.d'];
const OTHERS_FILES = ['/srv/homes/otheruser/private.txt', '/etc/skel/.profile', '/var/lib/otherdb/data.db', '/etc/init.d/otherdb'];

describe('config is read from the program\'s own files only', () => {
  it.each([
    ['attached (holds its logs, read no config)', WRITES],
    ['launched (read its config and /etc/passwd)', [...WRITES, ...LAUNCH_READS]],
  ])('%s: its own config is followed, its dependencies\' is carried and not followed', async (_label, files) => {
    const c = await capture(profileOf(files));
    const paths = c.files.map((f) => f.path);
    // Its own packages' config, read: the -common package's file names its conf.d glob and its state directory.
    expect(treeOf(c, '/etc/appd/conf.d')?.reason).toBe('config');
    expect(treeOf(c, '/srv/appd')).toBeDefined();
    // A dependency's /etc files travel (package) ...
    expect(c.files.find((f) => f.path === '/etc/usertool.conf')?.reasons).toContain('package');
    expect(paths).toContain('/etc/default/usertool');
    expect(paths).toContain('/usr/share/foo/table.dat');
    expect(paths).not.toContain('/usr/lib/x86_64-linux-gnu/libfoo.so.1');
    // ... but what they name does not, nor what /etc/passwd names, nor a directory a path template only starts.
    for (const other of OTHERS) expect(treeOf(c, other), other).toBeUndefined();
    for (const file of OTHERS_FILES) expect(paths, file).not.toContain(file);
    // Accounts: the one its own config names, and root; not a dependency's, a commented one, nor path components (/usr/bin).
    expect(c.users.map((u) => u.name).sort()).toEqual(['appuser', 'root']);
    expect(c.groups.map((g) => g.name).sort()).toEqual(['appuser', 'root']);
  });

  it('a dependency\'s config file the program opened itself is its config: it is followed', async () => {
    const c = await capture(profileOf([...WRITES, use('/etc/usertool.conf', ['read'], 'traced')]));
    expect(treeOf(c, '/srv/homes')?.reason).toBe('config');
    expect(c.users.map((u) => u.name)).toContain('otheruser');
    // Still not what the dependency's other files name.
    expect(treeOf(c, '/var/lib/otherdb')).toBeUndefined();
  });

  it('a package from another source is not the program\'s own, even when it ships the program\'s config', async () => {
    host.setSource('appd-common', 'appd-config');
    try {
      const c = await capture(profileOf(WRITES));
      expect(c.files.find((f) => f.path === '/etc/appd/appd.conf')?.reasons).toContain('package');
      expect(treeOf(c, '/etc/appd/conf.d')).toBeUndefined();
      expect(c.users.map((u) => u.name)).not.toContain('appuser');
      // What it writes is a data root whatever config says.
      expect(treeOf(c, '/var/log/appd')?.reason).toBe('data-root');
    } finally {
      host.setSource('appd-common', 'appd');
    }
  });

  it('a profile that an earlier capture completed is captured the same again', async () => {
    const once = await capture(profileOf(WRITES));
    const twice = await capture(once);
    for (const other of OTHERS) expect(treeOf(twice, other), other).toBeUndefined();
    expect(twice.users.map((u) => u.name).sort()).toEqual(['appuser', 'root']);
    expect(twice.trees.map((t) => `${t.path} ${t.reason}`).sort()).toEqual(once.trees.map((t) => `${t.path} ${t.reason}`).sort());
  });
});

// Was a bug: only the first executable's package was read, so a program launched through a
// wrapper of another package (setpriv ... server) travelled with the wrapper's files and none of
// the server's (its plug-in directory, its config), and failed to start at the destination.
describe('a launched wrapper that execs the program', () => {
  it('the packages of every program its processes ran travel, and the exec\'d program\'s config is its own', async () => {
    const launched = ResourceProfileSchema.parse({
      ...profileOf(WRITES),
      executable: '/usr/bin/wrapper',
      argv: ['/usr/bin/wrapper', '--user=appuser', '--', '/usr/sbin/appd'],
      files: [use('/usr/bin/wrapper', ['exec'], 'traced'), use('/usr/sbin/appd', ['exec'], 'traced'), ...WRITES],
    });
    const c = await capture(launched);
    const reasonsOf = (path: string) => c.files.find((f) => f.path === path)?.reasons;
    expect(reasonsOf('/usr/share/wraptool/messages')).toContain('package');
    expect(reasonsOf('/etc/default/appd')).toContain('package');
    expect(reasonsOf('/etc/appd/appd.conf')).toContain('package');
    // appd's own config is read: its conf.d glob and its state directory, its account.
    expect(treeOf(c, '/etc/appd/conf.d')?.reason).toBe('config');
    expect(treeOf(c, '/srv/appd')).toBeDefined();
    expect(c.users.map((u) => u.name)).toContain('appuser');
    // A dependency's config is still not followed.
    for (const other of OTHERS) expect(treeOf(c, other), other).toBeUndefined();
  });
});

describe('a directory the program writes into is a data root, even when config names it', () => {
  it('the log directory its config names: data-root in the trees and the reasons table', async () => {
    const c = await capture(profileOf([...WRITES, ...LAUNCH_READS]));
    expect(treeOf(c, '/var/log/appd')).toEqual(expect.objectContaining({ reason: 'data-root', files: 2 }));
    // /srv/appd is named by config, and the program writes into /srv/appd/state inside it.
    expect(treeOf(c, '/srv/appd')?.reason).toBe('data-root');
    expect(treeOf(c, '/srv/appd/state')).toBeUndefined();
    // A named directory it does not write into stays config.
    expect(treeOf(c, '/etc/appd/conf.d')?.reason).toBe('config');
    const reasons = summarizeReasons(c);
    // /var/log/appd (itself and the log), /srv/appd, its state directory and the state file.
    expect(reasons['data-root'].files).toBe(2 + 3);
    // The config row is conf.d (itself and one file) and the named config files outside trees.
    const configOutsideTrees = c.files.filter((f) => f.reasons?.[0] === 'config' && !c.trees.some((t) => f.path.startsWith(`${t.path}/`)));
    expect(reasons.config.files).toBe(2 + configOutsideTrees.length);
  });

  it('summarizeReasons counts a config tree holding a written file as a data root (a profile captured before the relabelling)', () => {
    const summary = summarizeReasons({
      files: [
        { path: '/var/log/x/x.log', kind: 'regular', access: ['write'], size: 10, sharedLibrary: false, created: false, reasons: ['held-open'] },
        { path: '/etc/x/x.conf', kind: 'regular', access: ['read'], size: 5, sharedLibrary: false, created: false, reasons: ['config'] },
      ],
      trees: [
        { path: '/var/log/x', reason: 'config', bytes: 4096, files: 2 },
        { path: '/etc/x', reason: 'config', bytes: 8192, files: 3 },
      ],
    });
    expect(summary['data-root']).toEqual({ files: 2, bytes: 4096 });
    expect(summary.config).toEqual({ files: 3, bytes: 8192 });
    expect(summary['held-open']).toEqual({ files: 0, bytes: 0 });
  });
});

describe('scanning config text', () => {
  it('a path that goes on with a variable or a command names no directory', () => {
    expect(absolutePathsIn('N=/etc/init.d/$NAME\nP=/run/${NAME}.pid\nD=/srv/`hostname`/x\nC=/etc/app.conf\n')).toEqual(['/etc/app.conf']);
    expect(absolutePathsIn('include /etc/app/conf.d/*.conf; root /var/www/html;')).toEqual(['/etc/app/conf.d/*.conf', '/var/www/html']);
  });

  it('account words come from live lines, not comments nor path components', () => {
    const words = configWordsIn('# user nobody;\n; group adm\n// owner bin\nuser appuser; # was otheruser\nexec /usr/bin/app\n');
    expect(words).toContain('appuser');
    expect(words).toContain('user');
    for (const w of ['nobody', 'adm', 'bin', 'otheruser', 'usr']) expect(words, w).not.toContain(w);
  });
});
