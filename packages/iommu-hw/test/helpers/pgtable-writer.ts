/**
 * Writer thread for the io-pgtable several-writers test: plays one CPU of a
 * bare-metal kernel mapping and unmapping its own pages of a range another
 * CPU writes at the same time (interleaved pages, so both share every table).
 */

import { parentPort, workerData } from 'node:worker_threads';
import { IoPgtable, type IoPgtableHandle } from '../../src/io-pgtable.js';
import { runWriter } from './pgtable-writer-loop.js';

const { handle, cpu, rounds, start } = workerData as { handle: IoPgtableHandle; cpu: number; rounds: number; start: SharedArrayBuffer };
const pt = IoPgtable.attach(handle);
// say ready, then start together with the other writer
const s = new Int32Array(start);
Atomics.store(s, 0, 1);
Atomics.notify(s, 0);
while (Atomics.load(s, 1) === 0) Atomics.wait(s, 1, 0, 10);
parentPort!.postMessage(runWriter(pt, cpu, rounds));
