/**
 * Choosing the /etc/passwd and /etc/group entries a program needs in its root. Pure.
 *
 * @module
 */
import type { GroupEntry, UserEntry } from '../policy/profile.js';
import { normalizeAbsolutePath } from '../policy/safe-input.js';

function parsePasswd(text: string): UserEntry[] {
  const users: UserEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7) continue;
    const [name, , uid, gid, gecos, home, shell] = f as [string, string, string, string, string, string, string];
    const h = normalizeAbsolutePath(home);
    const s = normalizeAbsolutePath(shell);
    if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(name) || !/^\d+$/.test(uid) || !/^\d+$/.test(gid) || !h.ok || !s.ok) continue;
    users.push({ name, uid: Number(uid), gid: Number(gid), gecos: gecos.replace(/[\0\n]/g, ''), home: h.path, shell: s.path });
  }
  return users;
}

function parseGroup(text: string): GroupEntry[] {
  const groups: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4) continue;
    const [name, , gid, members] = f as [string, string, string, string];
    if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(name) || !/^\d+$/.test(gid)) continue;
    groups.push({ name, gid: Number(gid), members: members.split(',').filter((m) => /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(m)) });
  }
  return groups;
}

/**
 * The accounts of the given ids, plus users whose name appears among `words` (argv and config):
 * a daemon told `-u appuser` or `user appuser;` switches to them. Their primary groups come too.
 */
export function selectAccounts(passwd: string, group: string, ids: { uids: Set<number>; gids: Set<number> }, words: Set<string>): { users: UserEntry[]; groups: GroupEntry[] } {
  const allUsers = parsePasswd(passwd);
  const allGroups = parseGroup(group);
  // uid 0 is always there: every root has a root user.
  const users = allUsers.filter((u) => ids.uids.has(u.uid) || words.has(u.name) || u.uid === 0);
  const gids = new Set([...ids.gids, ...users.map((u) => u.gid)]);
  const names = new Set(users.map((u) => u.name));
  const groups = allGroups
    .filter((g) => gids.has(g.gid) || words.has(g.name))
    .map((g) => ({ ...g, members: g.members.filter((m) => names.has(m)) }));
  return { users: dedupe(users, (u) => u.name), groups: dedupe(groups, (g) => g.name) };
}

function dedupe<T>(items: T[], key: (t: T) => string): T[] {
  const seen = new Set<string>();
  return items.filter((t) => !seen.has(key(t)) && seen.add(key(t)) !== undefined);
}
