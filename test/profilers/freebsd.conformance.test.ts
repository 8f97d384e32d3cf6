/**
 * The FreeBSD profiler through the shared profiler conformance suite, on a scripted FreeBSD host
 * (see freebsd-host.ts): the same fixture programs, as recordings of what FreeBSD's tools print
 * about them, and the same assertions as for the Linux profilers, except where a gap says what
 * this profiler does instead.
 */
import { createFreeBsdProfiler } from '../../src/profilers/freebsd.js';
import { runProfilerConformance } from '../conformance/profiler-suite.js';
import { scriptedFreeBsdHost } from './freebsd-host.js';

const host = scriptedFreeBsdHost();

runProfilerConformance('freebsd', () => createFreeBsdProfiler({ executor: host.executor }), {
  requirements: [],
  completeWhenLaunched: true,
  host,
  gaps: [
    // kmq_open(2) names are not decoded from the trace (a note says so); attaching lists them.
    'launch:posix-ipc-names',
    // kdump prints only the name an openat(dirfd, name) was given; attaching names the file.
    'launch:descriptor-relative-paths',
    // ktrace -t cnst records no argv; procstat -c is read for the root only.
    'argv-of-root-only',
    // The trace is read once ktrace has returned, so progress comes once, at the end.
    'progress-after-watching',
    // The executor's ABORTED comes back as the profile's error.
    'abort-is-an-error',
  ],
});
