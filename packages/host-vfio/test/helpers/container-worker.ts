/**
 * A thread of the VMM process issuing MAP_DMA / UNMAP_DMA on a shared VFIO
 * container: rounds of mappings in its own IOVA range, over guest pages the
 * other threads pin too. Each round's mappings are unmapped (one by one, or
 * all with one range unmap) except the last round's, which stay mapped.
 */
import { IoPgtable } from '@vmstack/iommu-hw';
import { LockTable, ModelClock, workerMain } from '@vmstack/shm';
import { VfioContainer } from '../../src/vfio-iommu-type1.js';
import { type ContainerWorkerInit, type ContainerWorkerResult, type KeptMapping, MAPS_PER_ROUND, mappingOf, SLOT_PAGES } from './container-plan.js';

const PAGE = 4096;

workerMain<ContainerWorkerInit, ContainerWorkerResult>((boot, control) => {
  const init = boot.init;
  const locks = LockTable.attach(init.locks, boot.index, control, 200);
  let invalidations = 0;
  const c = VfioContainer.attach(init.container, {
    pgtable: IoPgtable.attach(init.pgtable),
    lockTable: locks,
    costs: init.costs,
    invalidateIotlb: () => {
      invalidations++;
    },
  });
  return () => {
    const clock = new ModelClock('virtual');
    const failures: string[] = [];
    let maps = 0;
    let unmaps = 0;
    let kept: KeptMapping[] = [];
    for (let r = 0; r < init.rounds; r++) {
      const round = Array.from({ length: MAPS_PER_ROUND }, (_, k) => mappingOf(init, r, k));
      for (const m of round) {
        const { errno } = c.vfio_dma_do_map({ iova: m.iova, vaddr: m.vaddr, sizeBytes: m.pages * PAGE, read: true, write: true }, clock);
        maps++;
        if (errno) failures.push(`round ${r}: map 0x${m.iova.toString(16)} → ${errno}`);
      }
      if (r === init.rounds - 1) {
        kept = round;
        break;
      }
      const bytes = round.reduce((s, m) => s + m.pages * PAGE, 0);
      if (r % 2) {
        // one unmap over the whole round's range (holes included)
        const u = c.vfio_dma_do_unmap({ iova: init.iovaBase, sizeBytes: MAPS_PER_ROUND * SLOT_PAGES * PAGE }, clock);
        unmaps++;
        if (u.errno || u.unmappedBytes !== bytes) failures.push(`round ${r}: range unmap → ${u.errno}, ${u.unmappedBytes} of ${bytes} bytes`);
      } else {
        for (const m of round) {
          const u = c.vfio_dma_do_unmap({ iova: m.iova, sizeBytes: m.pages * PAGE }, clock);
          unmaps++;
          if (u.errno || u.unmappedBytes !== m.pages * PAGE) failures.push(`round ${r}: unmap 0x${m.iova.toString(16)} → ${u.errno}, ${u.unmappedBytes} bytes`);
        }
      }
    }
    return { maps, unmaps, failures, kept, invalidations };
  };
});
