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

test('a dropped frame’s own time is its caller’s self time and its callees become the caller’s; exit without enter throws', (t) => {
  const clock = new ModelClock('virtual');
  const p = new Profiler(clock);
  p.enter();
  p.enter();
  clock.charge(7);
  p.enter();
  clock.charge(3);
  p.exit('leaf');
  p.exit(null);
  p.exit('parent');
  t.deepEqual(p.toJSON(), { leaf: { calls: 1, ns: 3, selfNs: 3, bytes: 0 }, parent: { calls: 1, ns: 10, selfNs: 7, bytes: 0 } });
  t.deepEqual(p.callTree(), [
    { name: 'parent', calls: 1, ns: 10, selfNs: 7, bytes: 0, children: [{ name: 'leaf', calls: 1, ns: 3, selfNs: 3, bytes: 0, children: [] }] },
  ]);
  t.throws(() => p.exit('x'), { message: /without enter/ });
});

test('the call tree keeps each call path apart: the same function under two callers is two nodes, repeated calls add up', (t) => {
  const clock = new ModelClock('virtual');
  const p = new Profiler(clock);
  for (let i = 0; i < 2; i++) {
    p.enter(); // iommu_dma_map_page
    clock.charge(100);
    p.enter(); // io_bounce_buffers_map_page
    clock.charge(20);
    p.enter(); // memcpy
    clock.charge(300);
    p.exit('memcpy', 4096);
    p.exit('io_bounce_buffers_map_page', 4096);
    p.exit('iommu_dma_map_page', 4096);
  }
  p.enter(); // swiotlb_tbl_map_single, outermost
  p.enter();
  clock.charge(50);
  p.exit('memcpy', 512);
  p.exit('swiotlb_tbl_map_single', 512);
  // a frame for the tree only (work another worker reports in its own flat table)
  p.enter();
  p.enter();
  clock.charge(9);
  p.exit('vfio_dma_do_map', 4096, false);
  p.exit('virtio_iommu_handle_map', 4096);
  const tree = p.callTree();
  t.deepEqual(
    tree.map((n) => [n.name, n.calls, n.ns, n.selfNs]),
    [
      ['iommu_dma_map_page', 2, 840, 200],
      ['swiotlb_tbl_map_single', 1, 50, 0],
      ['virtio_iommu_handle_map', 1, 9, 0],
    ],
  );
  const memcpyUnderPool = tree[0].children[0].children[0];
  t.deepEqual(
    [tree[0].children[0].name, memcpyUnderPool.name, memcpyUnderPool.calls, memcpyUnderPool.ns, memcpyUnderPool.bytes],
    ['io_bounce_buffers_map_page', 'memcpy', 2, 600, 8192],
  );
  t.is(tree[1].children[0].name, 'memcpy');
  t.is(tree[2].children[0].name, 'vfio_dma_do_map');
  // flat: memcpy sums both paths; the tree-only frame has no flat row
  t.deepEqual(p.toJSON().memcpy, { calls: 3, ns: 650, selfNs: 650, bytes: 8704 });
  t.false('vfio_dma_do_map' in p.toJSON());
  t.is(p.toJSON().virtio_iommu_handle_map.selfNs, 0);
});
