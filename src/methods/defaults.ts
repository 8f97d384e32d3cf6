/**
 * The methods `migrate()` knows without being told: every built-in deployer (each with its
 * packager), and `esxi-vm` when the caller says which VM hosts the program.
 *
 * @module
 */
import type { Deployer } from '../spec/deployer.js';
import type { HostingVm } from './esxi-vm/hosting-vm.js';
import { createChrootDeployer } from './chroot/deployer.js';
import { createEsxiVmDeployer } from './esxi-vm/deployer.js';
import { createJailDeployer } from './freebsd-jail/deployer.js';
import { createNamespacesDeployer } from './linux-namespaces/deployer.js';

/** The built-in deployers by method id. */
export function defaultDeployers(options: { allowRoot: boolean; vm?: HostingVm }): Record<string, Deployer<unknown, unknown>> {
  const deployers: Deployer<unknown, unknown>[] = [
    createChrootDeployer({ allowRoot: options.allowRoot }),
    createNamespacesDeployer({ allowRoot: options.allowRoot }),
    createJailDeployer({ allowRoot: options.allowRoot }),
    ...(options.vm ? [createEsxiVmDeployer(options.vm)] : []),
  ] as Deployer<unknown, unknown>[];
  return Object.fromEntries(deployers.map((d) => [d.method, d]));
}
