export * from './stack/run-stack.js';
export * from './report/result.js';
export * from './report/fio-json.js';
export * from './fio/options.js';
export * from './compare/compare.js';
export * from './compare/experiment.js';
export * from './scale/scale.js';
