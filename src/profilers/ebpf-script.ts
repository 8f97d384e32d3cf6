/**
 * Generates the bpftrace program the eBPF profiler runs.
 *
 * Design, in short:
 * - Every probe is filtered on `@t[pid]`, a BPF map of the traced process ids (thread-group ids),
 *   seeded in `BEGIN` and grown by `sched:sched_process_fork`, so the rest of the system costs
 *   one map lookup per syscall.
 * - Syscall *enter* probes only remember the arguments per thread; *exit* probes print a line
 *   with the return value: a use when the call succeeded, a probe (a path looked for and not
 *   found) when a path lookup failed. Strings are read at exit because the kernel has faulted
 *   the user page in by then (a read at entry can fail on a not-yet-touched page).
 * - One line per event, tab-separated, the variable-length string always last, so a path with
 *   tabs or spaces stays unambiguous; bpftrace's JSON output mode escapes newlines and quotes.
 * - A marker probe, attached last (bpftrace attaches in program order), prints `R` when our own
 *   process calls `getpriority(PRIO_PROCESS, nonce)`: seeing it means every probe is live.
 *
 * The line formats are documented in `docs/profilers-ebpf.md` and decoded by `ebpf-parser.ts`.
 *
 * @module
 */

/** Longest string bpftrace 0.17 reads (BPFTRACE_STRLEN maximum); longer paths come back cut. */
export const EBPF_MAX_STRLEN = 200;

/**
 * Arguments of an exec read in the kernel (each one a `str()` of up to 199 bytes); an argv with
 * more is reported as longer than this, and user space reads the rest from /proc if /proc still
 * shows that exec.
 */
export const EBPF_MAX_EXEC_ARGS = 32;

/** Inputs of {@link generateEbpfScript}. */
export interface EbpfScriptOptions {
  /** Process ids to trace from the start (the launched wrapper, or an attached tree). */
  seedPids: readonly number[];
  /** Pid of the process that triggers the readiness marker (ours). */
  markerPid: number;
  /** Value passed as `who` to getpriority(2) by the marker; pick one no real process uses. */
  markerNonce: number;
  /**
   * Syscall tracepoints this kernel has (names like `sys_enter_openat`). Syscalls an architecture
   * lacks (`open`, `creat` on arm64) are left out instead of failing to attach.
   */
  availableSyscallEvents: ReadonlySet<string>;
  /** Whether `sched:sched_process_exit` has the `group_dead` field (Linux 6.x). */
  exitHasGroupDead: boolean;
  /**
   * Whether bpftrace can read the task's `mm` (kernel BTF, `/sys/kernel/btf/vmlinux`): then each
   * exec line carries the argv the new program starts with, read at the exec. Without it the
   * exec line says it has none (-1) and user space falls back to /proc.
   */
  execArgv?: boolean;
  /**
   * Trace the stat and access families, whose failures are probes (default true). They cost
   * 14 more probes: about 2 s more to compile and attach on a loaded 2-core machine.
   */
  traceLookups?: boolean;
}

/** Syscalls whose success is no use by itself: only a failure prints (a probe). */
const LOOKUP_SYSCALLS = ['newstat', 'newlstat', 'newfstatat', 'statx', 'access', 'faccessat', 'faccessat2'] as const;

const O_CREAT_WRONLY_TRUNC = 0o1101;

function pidList(pids: readonly number[]): string {
  return pids.map((p) => `  @t[${Math.trunc(p)}] = 1;`).join('\n');
}

/** One traced syscall: its two probe bodies, emitted only when the kernel has both tracepoints. */
interface SyscallPair {
  /** The syscall, as its tracepoints name it (`sys_enter_<name>`). */
  name: string;
  /** Body of the enter probe: remembers the arguments per thread. */
  enter: string;
  /** Filter and body of the exit probe: prints the line. */
  exit: string;
}

/**
 * Failures worth a line: not interrupted (-EINTR), would-block (-EAGAIN) or the kernel's restart
 * codes (-512..-516, the call runs again), and not -EEXIST (the path is there).
 */
const PROBE_FAILURE = '(args->ret != -4 && args->ret != -11 && args->ret != -17 && (args->ret < -516 || args->ret > -512))';

/** Enter: remember an open's path, flags and directory per thread. */
const saveOpen = (path: string, flags: string, dfd: string) => `{ @op[tid] = ((uint64)${path}, (int64)${flags}, (int64)${dfd}); }`;

/**
 * Exit of an open. A successful open of an absolute path the same process opened before with the
 * same flags is printed only when the descriptor it returns was last printed by that very line:
 * then user space already knows that descriptor is that path. Each printed line gets an id (the
 * time, its high bits mixed with the thread id so that two CPUs' lines never share one), kept
 * per path in @seen and per descriptor in @fdl. So a program re-reading a few files in a loop
 * costs no output, and every descriptor a later `*at` call, fchdir or mmap names is known (a
 * descriptor reused for another file always prints). Relative paths always print (the same name
 * may be another file after a chdir). A failed open prints with the negative errno as its fd,
 * once per process for an absolute path.
 */
const PRINT_OPEN = `/@op[tid].0/ {
  $e = @op[tid];
  $s = str(uptr($e.0));
  $abs = *(uint8*)uptr($e.0) == 47;
  if (args->ret >= 0) {
    if (!$abs || @seen[pid, $e.1, $s] == 0 || @seen[pid, $e.1, $s] != @fdl[pid, args->ret]) {
      $id = nsecs ^ ((uint64)tid << 42);
      if ($abs) { @seen[pid, $e.1, $s] = $id; }
      @fdl[pid, args->ret] = $id;
      printf("O\\t%d\\t%d\\t%d\\t%d\\t%d\\t%s\\n", pid, tid, $e.2, $e.1, args->ret, $s);
    }
  } else if (${PROBE_FAILURE}) {
    if (!$abs || !@miss[pid, $s]) {
      if ($abs) { @miss[pid, $s] = 1; }
      printf("O\\t%d\\t%d\\t%d\\t%d\\t%d\\t%s\\n", pid, tid, $e.2, $e.1, args->ret, $s);
    }
  }
  delete(@op[tid]);
}`;

/** Enter: remember a lookup's path and directory. */
const saveLookup = (path: string, dfd: string) => `{ @lk[tid] = ((uint64)${path}, (int64)${dfd}); }`;

/**
 * Exit of a lookup that is no use when it succeeds (stat, access) or is seen otherwise (exec):
 * only a failure prints, as a probe, once per process for an absolute path.
 */
const PRINT_LOOKUP = `/@lk[tid].0/ {
  if (args->ret < 0 && ${PROBE_FAILURE}) {
    $l = @lk[tid];
    $s = str(uptr($l.0));
    $abs = *(uint8*)uptr($l.0) == 47;
    if (!$abs || !@miss[pid, $s]) {
      if ($abs) { @miss[pid, $s] = 1; }
      printf("P\\t%d\\t%d\\t%d\\t%d\\t%s\\n", pid, tid, $l.1, args->ret, $s);
    }
  }
  delete(@lk[tid]);
}`;

/** Enter: remember a socket address pointer and its descriptor. */
const saveAddr = (fd: string, ptr: string) => `{ @sa[tid] = ((uint64)${ptr}, (int64)${fd}); }`;

/** Exit of bind/connect: the address, read field by field (family, port, IPv4, IPv6 halves, unix path). */
const printAddr = (tag: string, okCondition: string) => `/@sa[tid].0/ {
  $a = @sa[tid];
  $p = $a.0;
  if (${okCondition}) {
    $abs = (uint64)(*(uint8*)uptr($p + 2) == 0);
    printf("${tag}\\t%d\\t%d\\t%d\\t%d\\t%u\\t%u\\t%u\\t%lu\\t%lu\\t%d\\t%s\\n", pid, tid, args->ret, $a.1,
      *(uint16*)uptr($p), *(uint16*)uptr($p + 2), *(uint32*)uptr($p + 4), *(uint64*)uptr($p + 8), *(uint64*)uptr($p + 16),
      $abs, str(uptr($p + 2 + $abs), 108));
  }
  delete(@sa[tid]);
}`;

/** Enter: remember a descriptor (plus one, so that descriptor 0 is not "unset"). */
const saveFd = (fd: string) => `{ @fd[tid] = (int64)${fd} + 1; }`;

const printFd = (tag: string) => `/@fd[tid]/ {
  if (args->ret >= 0) { printf("${tag}\\t%d\\t%d\\t%d\\t%d\\n", pid, tid, @fd[tid] - 1, args->ret); }
  delete(@fd[tid]);
}`;

/** Enter of a SysV get: its key and size (the third field marks the entry as set). */
const saveGet = (key: string, size: string) => `{ @ig[tid] = ((int64)${key}, (int64)${size}, 1); }`;

const printGet = (tag: string) => `/@ig[tid].2/ {
  $g = @ig[tid];
  if (args->ret >= 0) { printf("${tag}\\t%d\\t%d\\t%d\\t%d\\t%d\\n", pid, tid, $g.0, $g.1, args->ret); }
  delete(@ig[tid]);
}`;

/** The traced syscalls: what each remembers on entry and prints on exit. */
const SYSCALL_PAIRS: readonly SyscallPair[] = [
  { name: 'open', enter: saveOpen('args->filename', 'args->flags', '-100'), exit: PRINT_OPEN },
  { name: 'openat', enter: saveOpen('args->filename', 'args->flags', 'args->dfd'), exit: PRINT_OPEN },
  { name: 'openat2', enter: saveOpen('args->filename', '*(uint64*)uptr(args->how)', 'args->dfd'), exit: PRINT_OPEN },
  { name: 'creat', enter: saveOpen('args->pathname', String(O_CREAT_WRONLY_TRUNC), '-100'), exit: PRINT_OPEN },
  {
    name: 'chdir',
    enter: '{ @cd[tid] = (uint64)args->filename; }',
    exit: `/@cd[tid]/ {
  if (args->ret == 0) { printf("C\\t%d\\t%d\\t%s\\n", pid, tid, str(uptr(@cd[tid]))); }
  else if (${PROBE_FAILURE}) { printf("P\\t%d\\t%d\\t-100\\t%d\\t%s\\n", pid, tid, args->ret, str(uptr(@cd[tid]))); }
  delete(@cd[tid]);
}`,
  },
  { name: 'fchdir', enter: saveFd('args->fd'), exit: printFd('D') },
  // A failed exec: the old program goes on, its pointer is still valid. (A successful one is
  // sched_process_exec; its exit runs in the new image, where the pointer means nothing.)
  { name: 'execve', enter: saveLookup('args->filename', '-100'), exit: PRINT_LOOKUP },
  { name: 'execveat', enter: saveLookup('args->filename', 'args->fd'), exit: PRINT_LOOKUP },
  { name: 'newstat', enter: saveLookup('args->filename', '-100'), exit: PRINT_LOOKUP },
  { name: 'newlstat', enter: saveLookup('args->filename', '-100'), exit: PRINT_LOOKUP },
  { name: 'newfstatat', enter: saveLookup('args->filename', 'args->dfd'), exit: PRINT_LOOKUP },
  { name: 'statx', enter: saveLookup('args->filename', 'args->dfd'), exit: PRINT_LOOKUP },
  { name: 'access', enter: saveLookup('args->filename', '-100'), exit: PRINT_LOOKUP },
  { name: 'faccessat', enter: saveLookup('args->filename', 'args->dfd'), exit: PRINT_LOOKUP },
  { name: 'faccessat2', enter: saveLookup('args->filename', 'args->dfd'), exit: PRINT_LOOKUP },
  {
    name: 'socket',
    enter: '{ @so[tid] = ((int64)args->family, (int64)args->type, (int64)args->protocol, 1); }',
    exit: `/@so[tid].3/ {
  $s = @so[tid];
  if (args->ret >= 0) { printf("S\\t%d\\t%d\\t%d\\t%d\\t%d\\t%d\\n", pid, tid, args->ret, $s.0, $s.1, $s.2); }
  delete(@so[tid]);
}`,
  },
  { name: 'bind', enter: saveAddr('args->fd', 'args->umyaddr'), exit: printAddr('B', 'args->ret == 0') },
  // Connect on a non-blocking socket returns -EINPROGRESS (-115): the program still uses the peer.
  { name: 'connect', enter: saveAddr('args->fd', 'args->uservaddr'), exit: printAddr('K', 'args->ret == 0 || args->ret == -115') },
  { name: 'listen', enter: saveFd('args->fd'), exit: printFd('L') },
  { name: 'accept', enter: saveFd('args->fd'), exit: printFd('A') },
  { name: 'accept4', enter: saveFd('args->fd'), exit: printFd('A') },
  { name: 'shmget', enter: saveGet('args->key', 'args->size'), exit: printGet('HG') },
  { name: 'semget', enter: saveGet('args->key', 'args->nsems'), exit: printGet('SG') },
  { name: 'msgget', enter: saveGet('args->key', '0'), exit: printGet('MG') },
  {
    name: 'mq_open',
    enter: '{ @mq[tid] = ((uint64)args->u_name, (int64)args->oflag); }',
    exit: `/@mq[tid].0/ {
  $m = @mq[tid];
  if (args->ret >= 0) { printf("Q\\t%d\\t%d\\t%d\\t%d\\t%s\\n", pid, tid, args->ret, $m.1, str(uptr($m.0))); }
  delete(@mq[tid]);
}`,
  },
];

/**
 * Operations on an existing IPC id: printed once per process and id (a BPF map remembers which),
 * so a program doing millions of semop(2) calls costs no output.
 */
function ipcUseProbes(has: (event: string) => boolean): string[] {
  const uses: Array<[string, string, string, number]> = [
    ['shmat', 'args->shmid', 'HA', 1],
    ['semop', 'args->semid', 'SO', 2],
    ['semtimedop', 'args->semid', 'SO', 2],
    ['msgsnd', 'args->msqid', 'MO', 3],
    ['msgrcv', 'args->msqid', 'MO', 3],
  ];
  return uses
    .filter(([name]) => has(`sys_enter_${name}`))
    .map(
      ([name, id, tag, kind]) => `tracepoint:syscalls:sys_enter_${name} /@t[pid] && !@iu[pid, ${kind}, (int64)${id}]/ {
  @iu[pid, ${kind}, (int64)${id}] = 1;
  printf("${tag}\\t%d\\t%d\\t%d\\n", pid, tid, ${id});
}`,
    );
}

/**
 * Body of `sched_process_exec` when the task's `mm` is readable: the argv the new program starts
 * with, read from its stack where the kernel has just copied it (`mm->start_stack` points at argc,
 * then the argv pointers), so the pages are present and the arguments are this exec's, whatever
 * the process does next; one `XA` line per argument (`EBPF_MAX_EXEC_ARGS` at most), then the exec
 * line with their count and whether there were more. All from one probe run, on one CPU: the
 * lines reach user space in this order.
 */
const EXEC_ARGV = `  $sp = curtask->mm->start_stack;
  $argc = *(uint64*)uptr($sp);
  $i = (uint64)0;
  while ($i < ${EBPF_MAX_EXEC_ARGS}) {
    if ($i >= $argc) { break; }
    printf("XA\\t%d\\t%d\\t%d\\t%s\\n", pid, tid, $i, str(uptr(*(uint64*)uptr($sp + 8 + 8 * $i))));
    $i++;
  }
  printf("X\\t%d\\t%d\\t%d\\t%d\\t%s\\n", pid, tid, $i, $argc > $i ? 1 : 0, str(args->filename));`;

/** Body of `sched_process_exec` without the task's `mm`: no arguments (-1), user space reads /proc. */
const NO_EXEC_ARGV = `  printf("X\\t%d\\t%d\\t-1\\t0\\t%s\\n", pid, tid, str(args->filename));`;

/** The bpftrace program for one profiling run. */
export function generateEbpfScript(options: EbpfScriptOptions): string {
  const has = (event: string) => options.availableSyscallEvents.has(event);
  const probes: string[] = [];
  probes.push(`BEGIN {\n${pidList(options.seedPids)}\n}`);
  probes.push(`tracepoint:sched:sched_process_fork /@t[pid]/ {
  @t[args->child_pid] = 1;
  printf("F\\t%d\\t%d\\t%d\\n", pid, tid, args->child_pid);
}`);
  const groupDead = options.exitHasGroupDead ? 'args->group_dead' : 'tid == pid';
  probes.push(`tracepoint:sched:sched_process_exit /@t[pid]/ {
  if (tid == pid) { printf("E\\t%d\\t%d\\n", pid, tid); }
  if (tid != pid) { delete(@t[tid]); }
  if (${groupDead}) { delete(@t[pid]); }
}`);
  probes.push(`tracepoint:sched:sched_process_exec /@t[pid]/ {\n${options.execArgv ? EXEC_ARGV : NO_EXEC_ARGV}\n}`);
  const skipped = new Set<string>(options.traceLookups === false ? LOOKUP_SYSCALLS : []);
  for (const pair of SYSCALL_PAIRS) {
    if (skipped.has(pair.name) || !has(`sys_enter_${pair.name}`) || !has(`sys_exit_${pair.name}`)) continue;
    probes.push(`tracepoint:syscalls:sys_enter_${pair.name} /@t[pid]/ ${pair.enter}`);
    probes.push(`tracepoint:syscalls:sys_exit_${pair.name} ${pair.exit}`);
  }
  probes.push(...ipcUseProbes(has));
  // Executable file mappings (PROT_EXEC = 4) are how dlopen'ed shared libraries show up.
  if (has('sys_enter_mmap')) {
    probes.push(`tracepoint:syscalls:sys_enter_mmap /@t[pid] && args->fd < 0x80000000 && (args->prot & 4)/ {
  printf("MM\\t%d\\t%d\\t%d\\n", pid, tid, args->fd);
}`);
  }
  // A heartbeat: progress for the caller, and bpftrace dies of SIGPIPE soon after we do.
  probes.push('interval:s:1 { printf("T\\n"); }');
  // bpftrace prints every non-empty map at exit: clear the ones this program uses.
  const usedMaps = [...new Set(probes.join('\n').match(/@[a-z]+/g) ?? [])];
  probes.push(`END {\n${usedMaps.map((m) => `  clear(${m});`).join('\n')}\n}`);
  // Last, so that seeing its line means every probe above is attached.
  probes.push(`tracepoint:syscalls:sys_enter_getpriority /pid == ${Math.trunc(options.markerPid)} && args->who == ${Math.trunc(options.markerNonce)}/ {
  printf("R\\n");
}`);
  return probes.join('\n\n') + '\n';
}
