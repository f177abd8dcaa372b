import { ModelClock } from '@vmstack/shm';
import test from 'ava';
import { Profiler } from '../src/profile.js';

test('nested functions: a child’s total comes out of its parent’s self time', (t) => {
  const clock = new ModelClock('virtual');
  const p = new Profiler(clock);
  p.enter(); // nvme_queue_rq
  clock.charge(100);
  p.enter(); // iommu_dma_map_sg
  clock.charge(40);
  p.enter(); // viommu_map_pages
  clock.charge(300);
  p.exit('viommu_map_pages', 4096);
  clock.charge(10);
  p.exit('iommu_dma_map_sg', 4096);
  clock.charge(5);
  p.exit('nvme_queue_rq');
  t.deepEqual(p.toJSON(), {
    viommu_map_pages: { calls: 1, ns: 300, selfNs: 300, bytes: 4096 },
    iommu_dma_map_sg: { calls: 1, ns: 350, selfNs: 50, bytes: 4096 },
    nvme_queue_rq: { calls: 1, ns: 455, selfNs: 105, bytes: 0 },
  });
});

test('a dropped frame still counts in its parent’s children; exit without enter throws', (t) => {
  const clock = new ModelClock('virtual');
  const p = new Profiler(clock);
  p.enter();
  p.enter();
  clock.charge(7);
  p.exit(null);
  p.exit('parent');
  t.deepEqual(p.toJSON(), { parent: { calls: 1, ns: 7, selfNs: 0, bytes: 0 } });
  t.throws(() => p.exit('x'), { message: /without enter/ });
});
