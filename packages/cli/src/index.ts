export * from './stack/run-stack.js';
export * from './report/result.js';
export * from './report/fio-json.js';
export * from './fio/options.js';
