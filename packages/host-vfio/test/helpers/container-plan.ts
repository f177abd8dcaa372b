/** What the container-worker threads do, shared with the test that checks what they left. */
import type { IoPgtableHandle } from '@vmstack/iommu-hw';
import type { LockTableHandle } from '@vmstack/shm';
import type { VfioContainerCosts, VfioContainerHandle } from '../../src/vfio-iommu-type1.js';

const PAGE = 4096;
/** IOVA room of one mapping */
export const SLOT_PAGES = 16;
export const MAPS_PER_ROUND = 8;

export interface ContainerWorkerInit {
  locks: LockTableHandle;
  container: VfioContainerHandle;
  pgtable: IoPgtableHandle;
  costs: VfioContainerCosts;
  /** this thread's IOVA range starts here */
  iovaBase: number;
  rounds: number;
  /** where in guest RAM the mappings start: mapping j at page (5j + vaddrOffsetPages) mod (guestPages - 4) */
  vaddrOffsetPages: number;
  guestPages: number;
}

export interface KeptMapping {
  iova: number;
  vaddr: number;
  pages: number;
}

export interface ContainerWorkerResult {
  maps: number;
  unmaps: number;
  /** ioctls that did not answer 0 (and, for unmaps, the bytes expected) */
  failures: string[];
  kept: KeptMapping[];
  invalidations: number;
}

/** Mapping k of round r of the thread whose init is `init`. */
export function mappingOf(init: Pick<ContainerWorkerInit, 'iovaBase' | 'vaddrOffsetPages' | 'guestPages'>, r: number, k: number): KeptMapping {
  const j = r * MAPS_PER_ROUND + k;
  const pages = 1 + (j % 4);
  const firstPage = (j * 5 + init.vaddrOffsetPages) % (init.guestPages - 4);
  return { iova: init.iovaBase + k * SLOT_PAGES * PAGE, vaddr: firstPage * PAGE, pages };
}
