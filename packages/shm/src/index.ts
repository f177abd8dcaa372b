export * from './errors.js';
export * from './region.js';
export * from './event.js';
export * from './ring.js';
export * from './mutex.js';
export * from './clock.js';
export * from './lifecycle.js';
export * from './sync.js';
