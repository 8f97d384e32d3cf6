/**
 * Every bundle packager passes the packager conformance suite, on a local source.
 */
import { createBundlePackager } from '../../src/bundle/packager.js';
import { createChrootDeployer } from '../../src/methods/chroot/deployer.js';
import { createNamespacesDeployer } from '../../src/methods/linux-namespaces/deployer.js';
import { createExecutorSource } from '../../src/source/executor-source.js';
import { packagerConformance } from '../conformance/packager-suite.js';

packagerConformance({ name: 'chroot (local source)', packager: () => createChrootDeployer().packager, source: () => createExecutorSource() });
packagerConformance({ name: 'linux-namespaces (local source)', packager: () => createNamespacesDeployer().packager, source: () => createExecutorSource() });
packagerConformance({ name: 'bundle packager without trees', packager: () => createBundlePackager(() => ({})), source: () => createExecutorSource(), carriesTrees: false });
