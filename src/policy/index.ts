/**
 * The pure policy core: resource model, classification, capability matrix, estimates, planner.
 * Nothing here imports from `node:`; it runs anywhere JavaScript does (a browser, a worker, an
 * edge runtime). Published on its own as `ap-migrate/policy`, which loads neither ssh2 nor any
 * `node:` module; the package root re-exports all of it.
 *
 * @module
 */
export * from './profile.js';
export * from './classify.js';
export * from './methods.js';
export * from './estimate.js';
export * from './plan.js';
export * from './format.js';
export { validateInput, issuesFromZod } from './validate.js';
// The errors planMigration and validation return, with their cross-copy `isInstance` checks, so
// that `ap-migrate/policy` is complete on its own.
export * from '../errors.js';
