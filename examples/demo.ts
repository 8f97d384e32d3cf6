/**
 * The main job. Until the migration pipeline lands this prints plans for the sample programs;
 * see examples/plan.ts.
 */
import './plan.js';
