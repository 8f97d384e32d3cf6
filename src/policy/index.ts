/**
 * The pure policy core: resource model, classification, capability matrix, estimates, planner.
 * Nothing here imports from `node:`; it runs anywhere JavaScript does.
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
