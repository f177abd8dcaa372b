/**
 * Walker thread for the io-pgtable concurrency test: plays the device's page
 * walker against a host thread that maps and unmaps.
 *
 * Control words (Int32 in `ctrl`):
 * | index | meaning | writer |
 * |-------|---------|--------|
 * | 0 | published round r: batch r is fully mapped | host (test) |
 * | 1 | acknowledged round: the walker is done checking batches ≤ it | walker |
 * | 2 | stop (1) | host (test) |
 * Batch r (batchPages pages) sits at batchIova(r) and maps page i to
 * expectedHpa(iova) with prot protOf(r); it is unmapped only after the walker
 * acknowledged a round ≥ r.
 */

import { parentPort, workerData } from 'node:worker_threads';
import { IoPgtable, type IoPgtableHandle } from '../../src/io-pgtable.js';
import { ACKED, BATCH_PAGES, batchIova, expectedHpa, mulberry32, PUBLISHED, protOf, STOP } from './pgtable-protocol.js';

const { handle, ctrl, seed } = workerData as { handle: IoPgtableHandle; ctrl: SharedArrayBuffer; seed: number };
const pt = IoPgtable.attach(handle);
const c = new Int32Array(ctrl);
const rand = mulberry32(seed);
const errors: string[] = [];
let walks = 0;
let hits = 0;
let roundsVerified = 0;
let lastChecked = 0;

function check(iova: number, round: number, mustBePresent: boolean): void {
  const r = pt.walk(iova + 123); // an offset inside the page must come back too
  walks++;
  if (r === null) {
    if (mustBePresent && errors.length < 10) errors.push(`round ${round}: iova 0x${iova.toString(16)} not present after publication`);
    return;
  }
  hits++;
  if ((r.hpa !== expectedHpa(iova) + 123 || r.prot !== protOf(round) || r.levels !== 4) && errors.length < 10) {
    errors.push(
      `round ${round}: iova 0x${iova.toString(16)} → hpa 0x${r.hpa.toString(16)} prot ${r.prot} (want 0x${(expectedHpa(iova) + 123).toString(16)} prot ${protOf(round)})`,
    );
  }
}

while (Atomics.load(c, STOP) === 0) {
  const p = Atomics.load(c, PUBLISHED);
  if (p > lastChecked) {
    for (let i = 0; i < BATCH_PAGES; i++) check(batchIova(p) + i * 4096, p, true);
    roundsVerified++;
    lastChecked = p;
    Atomics.store(c, ACKED, p);
    Atomics.notify(c, ACKED);
  }
  // probe the batches around it while the host maps and unmaps them
  for (let k = 0; k < 64; k++) {
    const round = Math.max(1, p - 1 + (rand() % 3));
    check(batchIova(round) + (rand() % BATCH_PAGES) * 4096, round, false);
  }
}
parentPort!.postMessage({ walks, hits, roundsVerified, errors });
