/**
 * The `topology` key of the `vmstack` report: the Topology a run was given,
 * with every key spelled snake_case at every depth (`hostIommus` →
 * `host_iommus`, `endpointId` → `endpoint_id`), as the rest of the report.
 * Values (ids, counts) are unchanged.
 */

import type { Topology } from '../topology/topology.js';
import type { SnakeCase } from './vmstack-report.js';

/** `T` with every key, at every depth, spelled snake_case. */
export type SnakeKeysDeep<T> = T extends readonly (infer E)[]
  ? SnakeKeysDeep<E>[]
  : T extends object
    ? { [K in keyof T & string as SnakeCase<K>]: SnakeKeysDeep<T[K]> }
    : T;

export type TopologyReport = SnakeKeysDeep<Topology>;

function snakeDeep(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(snakeDeep);
  if (typeof x !== 'object' || x === null) return x;
  return Object.fromEntries(Object.entries(x).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snakeDeep(v)]));
}

/** `t` for the report: the same data, keys snake_case. */
export function topologyReport(t: Topology): TopologyReport {
  return snakeDeep(t) as TopologyReport;
}
