/**
 * Flame-graph output: folded stacks add up to the profile's self times, and
 * the speedscope file satisfies speedscope's file-format spec (its
 * `src/lib/file-format-spec.ts`, from which speedscope generates
 * `https://www.speedscope.app/file-format-schema.json`), checked here rule by
 * rule; `run --flamegraph` writes both from a real run.
 */

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CallTreeNode } from '@vmstack/shm';
import test from 'ava';
import { type CallTreeRoot, formatFolded, speedscopeFile } from '../src/report/flamegraph.js';
import { vmstack } from './helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'vmstack-flamegraph-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function node(name: string, selfNs: number, children: CallTreeNode[] = []): CallTreeNode {
  const ns = selfNs + children.reduce((s, c) => s + c.ns, 0);
  return { name, calls: 1, ns, selfNs, bytes: 0, children };
}

const ROOTS: CallTreeRoot[] = [
  {
    name: 'guest/vcpu0',
    where: 'guest',
    tree: [
      node('nvme_irq', 1000, [node('iommu_dma_unmap_sg', 50, [node('io_bounce_buffers_unmap_sg', 10, [node('memcpy', 700)])])]),
      node('nvme_queue_rq', 150, [node('iommu_dma_map_sg', 90, [node('io_bounce_buffers_map_sg', 0, [node('viommu_map_pages', 2)])])]),
    ],
  },
  { name: 'vmm', where: 'vmm', tree: [node('virtio_iommu_handle_map', 4, [node('vfio_dma_do_map', 37)])] },
];

test('folded stacks: one line per call path with self time, `root;…;function ns`; paths without self time are left out', (t) => {
  t.is(
    formatFolded(ROOTS),
    [
      'guest/vcpu0;nvme_irq 1000',
      'guest/vcpu0;nvme_irq;iommu_dma_unmap_sg 50',
      'guest/vcpu0;nvme_irq;iommu_dma_unmap_sg;io_bounce_buffers_unmap_sg 10',
      'guest/vcpu0;nvme_irq;iommu_dma_unmap_sg;io_bounce_buffers_unmap_sg;memcpy 700',
      'guest/vcpu0;nvme_queue_rq 150',
      'guest/vcpu0;nvme_queue_rq;iommu_dma_map_sg 90',
      'guest/vcpu0;nvme_queue_rq;iommu_dma_map_sg;io_bounce_buffers_map_sg;viommu_map_pages 2',
      'vmm;virtio_iommu_handle_map 4',
      'vmm;virtio_iommu_handle_map;vfio_dma_do_map 37',
      '',
    ].join('\n'),
  );
  t.is(formatFolded([{ name: 'a b;c', where: 'host', tree: [node('f', 1)] }]), 'a_b_c;f 1\n', 'separators in a name are replaced');
  t.is(formatFolded([]), '');
});

const VALUE_UNITS = ['none', 'nanoseconds', 'microseconds', 'milliseconds', 'seconds', 'bytes'];

/** speedscope's FileFormat.File, rule by rule: every problem found, as text (empty: valid). */
function speedscopeProblems(file: unknown): string[] {
  const bad: string[] = [];
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
  if (!isObj(file)) return ['the file is not an object'];
  if (file.$schema !== 'https://www.speedscope.app/file-format-schema.json') bad.push('$schema');
  if (!isObj(file.shared) || !Array.isArray(file.shared.frames)) return [...bad, 'shared.frames'];
  const frames = file.shared.frames as unknown[];
  frames.forEach((f, i) => {
    if (!isObj(f) || typeof f.name !== 'string') bad.push(`frames[${i}].name`);
    else {
      if (f.file !== undefined && typeof f.file !== 'string') bad.push(`frames[${i}].file`);
      for (const k of ['line', 'col'] as const) if (f[k] !== undefined && !isNum(f[k])) bad.push(`frames[${i}].${k}`);
    }
  });
  if (!Array.isArray(file.profiles)) return [...bad, 'profiles'];
  if (file.name !== undefined && typeof file.name !== 'string') bad.push('name');
  if (file.exporter !== undefined && typeof file.exporter !== 'string') bad.push('exporter');
  if (file.activeProfileIndex !== undefined && !(isNum(file.activeProfileIndex) && file.activeProfileIndex < file.profiles.length))
    bad.push('activeProfileIndex');
  (file.profiles as unknown[]).forEach((p, i) => {
    if (!isObj(p)) return bad.push(`profiles[${i}]`);
    if (typeof p.name !== 'string') bad.push(`profiles[${i}].name`);
    if (!VALUE_UNITS.includes(p.unit as string)) bad.push(`profiles[${i}].unit`);
    if (!isNum(p.startValue) || !isNum(p.endValue) || p.endValue < p.startValue) bad.push(`profiles[${i}].startValue/endValue`);
    if (p.type === 'sampled') {
      if (!Array.isArray(p.samples) || !Array.isArray(p.weights)) return bad.push(`profiles[${i}].samples/weights`);
      if (p.samples.length !== p.weights.length) bad.push(`profiles[${i}]: samples and weights differ in length`);
      (p.samples as unknown[]).forEach((stack, j) => {
        if (!Array.isArray(stack) || !stack.every((f) => Number.isInteger(f) && f >= 0 && f < frames.length)) bad.push(`profiles[${i}].samples[${j}]`);
      });
      if (!(p.weights as unknown[]).every(isNum)) bad.push(`profiles[${i}].weights`);
    } else if (p.type === 'evented') {
      if (!Array.isArray(p.events)) bad.push(`profiles[${i}].events`);
    } else {
      bad.push(`profiles[${i}].type`);
    }
  });
  return bad;
}

test('speedscope: the file satisfies the spec; one sampled profile per root, each path a sample weighted by its self ns', (t) => {
  const file = speedscopeFile(ROOTS, 'a run', 'vmstack');
  t.deepEqual(speedscopeProblems(file), []);
  t.deepEqual(
    file.profiles.map((p) => [p.name, p.unit, p.endValue]),
    [
      ['guest/vcpu0', 'nanoseconds', 2002],
      ['vmm', 'nanoseconds', 41],
    ],
  );
  const names = (stack: number[]) => stack.map((i) => file.shared.frames[i].name).join(';');
  const memcpy = file.profiles[0].samples.findIndex((s) => names(s) === 'nvme_irq;iommu_dma_unmap_sg;io_bounce_buffers_unmap_sg;memcpy');
  t.true(memcpy >= 0);
  t.is(file.profiles[0].weights[memcpy], 700);
  t.is(new Set(file.shared.frames.map((f) => f.name)).size, file.shared.frames.length, 'each frame once');
  // the checker catches what the spec forbids
  const broken = JSON.parse(JSON.stringify(file)) as { profiles: { samples: number[][]; unit: string }[] };
  broken.profiles[0].samples[0] = [99];
  broken.profiles[1].unit = 'ticks';
  t.deepEqual(speedscopeProblems(broken), ['profiles[0].samples[0]', 'profiles[1].unit']);
});

test('run --flamegraph: folded lines of the pool run add up to the vCPU’s profiled time, with the pool under iommu_dma_unmap_sg; speedscope parses and satisfies the spec', async (t) => {
  const folded = join(tmp, 'pool.folded');
  writeFileSync(folded, 'an older graph');
  const json = join(tmp, 'run.json');
  const args = [
    'run',
    '--rw',
    'read',
    '--bs',
    '16k',
    '--iodepth',
    '8',
    '--size',
    '1m',
    '--strategy',
    'bounce',
    '--always-bounce-limit',
    '64k',
    '--direct',
    '1',
  ];
  const r = await vmstack([...args, '--output-format', 'json', '--output', json, '--flamegraph', folded], 60_000);
  t.is(r.code, 0, r.stderr);
  t.false(existsSync(`${folded}.partial`));
  const lines = readFileSync(folded, 'utf8').trimEnd().split('\n');
  t.true(
    lines.every((l) => /^[^ ;]+(;[^ ;]+)* \d+$/.test(l)),
    lines.join('\n'),
  );
  const profile = (JSON.parse(readFileSync(json, 'utf8')) as { vmstack: { profile: Record<string, { ns: number; self_ns: number; where: string }> } }).vmstack
    .profile;
  const sumUnder = (prefix: string) => lines.filter((l) => l.startsWith(prefix)).reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  // iommu_dma_unmap_sg is called from nvme_irq only: its total is every line through it
  t.is(sumUnder('guest/vcpu0;nvme_irq;iommu_dma_unmap_sg'), profile.iommu_dma_unmap_sg.ns);
  t.true(lines.some((l) => l.startsWith('guest/vcpu0;nvme_irq;iommu_dma_unmap_sg;io_bounce_buffers_unmap_sg;memcpy ')));
  // the guest's lines hold every guest function's self time
  const guestSelf = Object.values(profile)
    .filter((row) => row.where === 'guest')
    .reduce((s, row) => s + row.self_ns, 0);
  t.is(sumUnder('guest/vcpu0;'), guestSelf);
  // the host's VFIO work is drawn under the VMM's handlers, not as a root of its own
  t.false(lines.some((l) => l.startsWith('host;')));
  t.true(lines.some((l) => l.startsWith('vmm;virtio_iommu_handle_map;vfio_dma_do_map ')));

  const scope = join(tmp, 'strict.speedscope.json');
  const s = await vmstack(['run', '--size', '256k', '--flamegraph', scope, '--flamegraph-format', 'speedscope', '--output', join(tmp, 'strict.txt')], 60_000);
  t.is(s.code, 0, s.stderr);
  const file = JSON.parse(readFileSync(scope, 'utf8')) as unknown;
  t.deepEqual(speedscopeProblems(file), []);
  t.deepEqual(
    (file as { profiles: { name: string }[] }).profiles.map((p) => p.name),
    ['guest/vcpu0', 'vmm'],
  );
});
