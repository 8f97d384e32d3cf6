/**
 * The one pseudo-path rule, shared by the planner's estimate, the bundle's selection and walk,
 * the profilers and the capture, so the plan's estimate and the bundle agree. Pure.
 *
 * @module
 */

/**
 * Kernel-made file systems whose contents are never copied: `/proc`, `/sys`, and under `/dev` the
 * pty, shared-memory, message-queue and descriptor file systems (`/dev/pts`, `/dev/shm`,
 * `/dev/mqueue`, FreeBSD's `/dev/fd`). Device nodes elsewhere in `/dev` are not pseudo paths: they
 * are devices (left out unless `includeDevices`; the deployers make a minimal `/dev`).
 */
export function isPseudoPath(path: string): boolean {
  return /^\/(proc|sys|dev\/pts|dev\/shm|dev\/mqueue|dev\/fd)(\/|$)/.test(path);
}
