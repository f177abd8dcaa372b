/**
 * Topologies from command-line flags and JSON files (topology/build.ts), the
 * worker rule (topology/workers.ts), the tree (topology/tree.ts), the HTML
 * drawing and the report's snake_case copy: defaults are exactly
 * defaultTopology, every bad input is an InputError naming the flag or the
 * field path, a file round-trips.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FioJobSpec } from '@vmstack/guest-kernel';
import { InputError } from '@vmstack/shm';
import test, { type ExecutionContext } from 'ava';
import { parseJobFileText } from '../src/fio/jobfile.js';
import { jobsFromCommandLine, jobsFromJobFile } from '../src/fio/options.js';
import { topologyHtml } from '../src/report/topology-html.js';
import { topologyReport } from '../src/report/topology-report.js';
import { jobsByDevice, resolveTopology, type TopologyFlags, topologyFromFile, topologyFromFlags } from '../src/topology/build.js';
import { defaultTopology, type Topology, validateTopology } from '../src/topology/topology.js';
import { formatTopologyTree } from '../src/topology/tree.js';
import { topologyWorkers } from '../src/topology/workers.js';
import { REPO } from './helpers/cli.js';

const MiB = 1024 * 1024;
const vm = { strategy: 'strict', driverGeneration: 'v5.10', guestRamBytes: 64 * MiB } as const;

const tmp = mkdtempSync(join(tmpdir(), 'vmstack-topology-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(tmp, name);
  writeFileSync(path, text);
  return path;
}

function jobs(numjobs: number): FioJobSpec[] {
  return jobsFromCommandLine({ rw: 'randread', bs: '4k', iodepth: '8', size: '1m', numjobs: String(numjobs) }).jobs;
}

/** Jobs from a job file's text. */
function jobsOf(text: string): FioJobSpec[] {
  return jobsFromJobFile(parseJobFileText(text, 'jobs.fio')).jobs;
}

function build(numjobs: number, flags: TopologyFlags = {}) {
  return topologyFromFlags(jobs(numjobs), { ...vm, ...flags });
}

/** Asserts a one-line InputError naming the field and value, whose message says what is allowed. */
function inputError(t: ExecutionContext, fn: () => unknown, field: string, value: unknown, ...allowed: string[]): InputError {
  const e = t.throws(fn, { instanceOf: InputError });
  t.is(e.field, field, 'names the field');
  t.deepEqual(e.value, value, 'quotes the value');
  t.true(e.message.startsWith(`${field}: `), e.message);
  t.false(e.message.includes('\n'), 'one line');
  for (const a of allowed) t.true(e.message.includes(a), `message "${e.message}" says "${a}"`);
  return e;
}

test('no flags: exactly defaultTopology (same ids, endpoint 0x100, domain 1), and the job list as it was', (t) => {
  for (const n of [1, 3]) {
    const js = jobs(n);
    const b = topologyFromFlags(js, vm);
    t.deepEqual(b.topology, defaultTopology(js, vm));
    t.deepEqual(b.jobs, js);
  }
  const untrusted = topologyFromFlags(jobs(2), { ...vm, strategy: 'bounce', driverGeneration: 'v6.x', untrusted: true });
  t.deepEqual(untrusted.topology, defaultTopology(jobs(2), { ...vm, strategy: 'bounce', driverGeneration: 'v6.x', untrusted: true }));
  t.deepEqual(
    build(2, { vms: '1', vcpus: '2', devices: 1, viommus: '1', container: 'shared', platform: 'vm', iommuUnits: '1' }).topology,
    defaultTopology(jobs(2), vm),
    'the defaults written out',
  );
});

test('--vms 2: each VM runs the whole job list on its own drive; the run job list is the VM lists one after another', (t) => {
  const b = build(2, { vms: 2 });
  t.is(b.jobs.length, 4);
  t.deepEqual(
    b.jobs.map((j) => [j.name, j.jobIndex]),
    [
      ['vmstack', 0],
      ['vmstack', 1],
      ['vmstack', 0],
      ['vmstack', 1],
    ],
  );
  t.not(b.jobs[0], b.jobs[2], 'a copy per VM');
  const [vm0, vm1] = b.topology.vms;
  t.deepEqual([vm0.id, vm1.id], ['vm0', 'vm1']);
  t.deepEqual(vm0.jobs, [
    { job: 0, vcpu: 0 },
    { job: 1, vcpu: 1 },
  ]);
  t.deepEqual(vm1.jobs, [
    { job: 2, vcpu: 0 },
    { job: 3, vcpu: 1 },
  ]);
  t.deepEqual(
    b.topology.vms.map((v) => [v.viommus, v.containers, v.devices.map((d) => [d.id, d.controller, d.viommu, d.container, d.endpointId, d.domainId])]),
    [
      [[{ id: 'viommu0' }], [{ id: 'container0' }], [['nvme0', 'nvme-ctrl0', 'viommu0', 'container0', 0x100, 1]]],
      [[{ id: 'viommu1' }], [{ id: 'container1' }], [['nvme1', 'nvme-ctrl1', 'viommu1', 'container1', 0x100, 1]]],
    ],
  );
  t.deepEqual(b.topology.hostIommus, [{ id: 'dmar0', controllers: ['nvme-ctrl0', 'nvme-ctrl1'] }], 'one host unit for all by default');
  t.deepEqual(
    jobsByDevice(b).map((g) => g.length),
    [2, 2],
    'two jobs per drive',
  );
});

test('--devices, --viommus, --container, --iommu-units: PCI bus k+1, domain k+1, round-robin over viommus and units, a container each', (t) => {
  const b = build(4, { vms: 2, devices: 3, viommus: 2, container: 'per-device', iommuUnits: 2 });
  const vm1 = b.topology.vms[1];
  t.deepEqual(
    vm1.devices.map((d) => [d.id, d.controller, d.viommu, d.container, d.endpointId, d.domainId]),
    [
      ['nvme3', 'nvme-ctrl3', 'viommu2', 'container3', 0x100, 1],
      ['nvme4', 'nvme-ctrl4', 'viommu3', 'container4', 0x200, 2],
      ['nvme5', 'nvme-ctrl5', 'viommu2', 'container5', 0x300, 3],
    ],
  );
  t.deepEqual(vm1.viommus, [{ id: 'viommu2' }, { id: 'viommu3' }]);
  t.deepEqual(b.topology.hostIommus, [
    { id: 'dmar0', controllers: ['nvme-ctrl0', 'nvme-ctrl2', 'nvme-ctrl4'] },
    { id: 'dmar1', controllers: ['nvme-ctrl1', 'nvme-ctrl3', 'nvme-ctrl5'] },
  ]);
  t.deepEqual(
    vm1.jobs.map((p) => p.device),
    ['nvme3', 'nvme4', 'nvme5', 'nvme3'],
    'job i on device i mod devices',
  );
  t.is(b.topology.controllers.length, 6);
});

test('--vcpus: job i of a VM on vCPU i mod vcpus; more vCPUs than jobs leaves some idle', (t) => {
  t.deepEqual(
    build(5, { vcpus: 2 }).topology.vms[0].jobs.map((p) => p.vcpu),
    [0, 1, 0, 1, 0],
  );
  const idle = build(1, { vcpus: 3 }).topology.vms[0];
  t.is(idle.vcpus.length, 3);
  t.deepEqual(idle.jobs, [{ job: 0, vcpu: 0 }]);
});

test("filename=/dev/nvmeXn1 puts the job on the VM's device X, in every VM; beyond the VM's devices it names the job's filename", (t) => {
  const js = jobsOf('[global]\nsize=1m\n[a]\nfilename=/dev/nvme1n1\n[b]\n[c]\nfilename=/dev/nvme0n1\n[d]\n');
  const b = topologyFromFlags(js, { ...vm, vms: 2, devices: 2 });
  t.deepEqual(
    b.topology.vms.map((v) => v.jobs.map((p) => p.device)),
    [
      ['nvme1', 'nvme1', 'nvme0', 'nvme1'],
      ['nvme3', 'nvme3', 'nvme2', 'nvme3'],
    ],
    'a: its filename; b: job 1 mod 2; c: its filename; d: job 3 mod 2',
  );
  t.deepEqual(
    topologyFromFlags(jobsOf('[a]\nsize=1m\nfilename=/dev/nvme0n1\n'), vm).topology,
    defaultTopology(jobsOf('[a]\nsize=1m\n'), vm),
    '/dev/nvme0n1 with one device: the default shape',
  );
  inputError(
    t,
    () => topologyFromFlags(jobsOf('[a]\nsize=1m\nfilename=/dev/nvme2n1\n'), { ...vm, devices: 2 }),
    '[a] filename',
    '/dev/nvme2n1',
    '/dev/nvme0n1 … /dev/nvme1n1',
    '--devices',
  );
  inputError(t, () => topologyFromFlags(jobsOf('[a]\nsize=1m\nfilename=/dev/nvme1n1\n'), vm), '[a] filename', '/dev/nvme1n1', '/dev/nvme0n1 (1 device per VM');
});

test('--platform bare-metal: the host OS with its CPUs and devices, no viommu, container, endpoint or domain', (t) => {
  const b = build(3, { platform: 'bare-metal', devices: 2, vcpus: 2, iommuUnits: 2 });
  t.deepEqual(b.topology, {
    platform: 'bare-metal',
    vms: [
      {
        id: 'host',
        ramBytes: 64 * MiB,
        strategy: 'strict',
        driverGeneration: 'v5.10',
        vcpus: [{ id: 0 }, { id: 1 }],
        jobs: [
          { job: 0, vcpu: 0, device: 'nvme0' },
          { job: 1, vcpu: 1, device: 'nvme1' },
          { job: 2, vcpu: 0, device: 'nvme0' },
        ],
        viommus: [],
        containers: [],
        devices: [
          { id: 'nvme0', controller: 'nvme-ctrl0', untrusted: false },
          { id: 'nvme1', controller: 'nvme-ctrl1', untrusted: false },
        ],
      },
    ],
    hostIommus: [
      { id: 'dmar0', controllers: ['nvme-ctrl0'] },
      { id: 'dmar1', controllers: ['nvme-ctrl1'] },
    ],
    controllers: [{ id: 'nvme-ctrl0' }, { id: 'nvme-ctrl1' }],
  });
  t.deepEqual(
    topologyWorkers(b.topology).map((w) => w.role),
    ['host/cpu0', 'host/cpu1', 'nvme-device/nvme-ctrl0', 'nvme-device/nvme-ctrl1'],
  );
});

test('every bad flag is an InputError naming the flag, the value and what is allowed', (t) => {
  const cases: [TopologyFlags, number, string, unknown, ...string[]][] = [
    [{ vms: '0' }, 1, '--vms', '0', 'a whole number of VMs from 1 to 64'],
    [{ vms: 'two' }, 1, '--vms', 'two', 'from 1 to 64'],
    [{ vms: '1.5' }, 1, '--vms', '1.5', 'whole number'],
    [{ vms: '-1' }, 1, '--vms', '-1', 'whole number'],
    [{ vms: '65' }, 1, '--vms', '65', 'from 1 to 64'],
    [{ vcpus: '0' }, 1, '--vcpus', '0', 'vCPUs per VM'],
    [{ devices: '' }, 1, '--devices', '', 'devices per VM'],
    [{ viommus: '0' }, 1, '--viommus', '0', 'virtio-iommus'],
    [{ viommus: '2' }, 1, '--viommus', '2', 'at most --devices (1)'],
    [{ iommuUnits: '0' }, 1, '--iommu-units', '0', 'host IOMMU units'],
    [{ iommuUnits: '3', vms: '2' }, 1, '--iommu-units', '3', 'at most the number of NVMe controllers (2: 2 VMs × 1 device)'],
    [{ container: 'private' }, 1, '--container', 'private', 'one of shared, per-device'],
    [{ platform: 'xen' }, 1, '--platform', 'xen', 'one of vm, bare-metal'],
    [{ platform: 'bare-metal', vms: '2' }, 1, '--vms', '2', '1 with --platform bare-metal'],
    [{ platform: 'bare-metal', viommus: '1' }, 1, '--viommus', '1', 'only with --platform vm'],
    [{ platform: 'bare-metal', container: 'shared' }, 1, '--container', 'shared', 'only with --platform vm'],
    [{ vms: '8', vcpus: '8' }, 1, '--vms', '8', 'at most 64 workers', '8 VMs × (8 vCPUs + 2 × 1 virtio-iommu + 1 device) = 88'],
    [{ devices: '40', viommus: '20' }, 1, '--viommus', '20', '1 VM × (1 vCPU + 2 × 20 virtio-iommus + 40 devices) = 81'],
    [{}, 62, '--vcpus', '62 (one per job)', '(62 vCPUs + 2 × 1 virtio-iommu + 1 device) = 65'],
  ];
  for (const [flags, numjobs, field, value, ...allowed] of cases) inputError(t, () => build(numjobs, flags), field, value, ...allowed);
});

test('validateTopology: bare metal has one host OS and no VMM parts; a job names a device of its own VM', (t) => {
  const bare = (): Topology => structuredClone(build(2, { platform: 'bare-metal', devices: 2 }).topology);
  const withEdit = (edit: (x: Record<string, never> & Topology) => void, numjobs = 2) => {
    const x = bare();
    edit(x as never);
    return () => validateTopology(x, numjobs);
  };
  t.notThrows(withEdit(() => {}));
  inputError(
    t,
    withEdit((x) => ((x.vms as unknown[]) = [x.vms[0], { ...x.vms[0], id: 'host2', jobs: [] }])),
    'topology.vms',
    bare().vms.concat({ ...bare().vms[0], id: 'host2', jobs: [] }),
    'exactly 1 entry on bare-metal',
  );
  inputError(
    t,
    withEdit((x) => ((x.vms[0].viommus as unknown[]) = [{ id: 'viommu0' }])),
    'topology.vms[0].viommus',
    [{ id: 'viommu0' }],
    '[] on bare-metal',
  );
  inputError(
    t,
    withEdit((x) => ((x.vms[0].containers as unknown[]) = [{ id: 'c' }])),
    'topology.vms[0].containers',
    [{ id: 'c' }],
    '[] on bare-metal',
  );
  for (const [key, value] of [
    ['viommu', 'viommu0'],
    ['container', 'container0'],
    ['endpointId', 0x100],
    ['domainId', 1],
  ] as const) {
    inputError(
      t,
      withEdit((x) => Object.assign(x.vms[0].devices[1], { [key]: value })),
      `topology.vms[0].devices[1].${key}`,
      value,
      `no ${key} on bare-metal`,
    );
  }
  // on a VM: a job's device must be one of that VM's
  const twoVms = build(1, { vms: 2, devices: 2 }).topology;
  twoVms.vms[0].jobs[0].device = 'nvme2';
  inputError(t, () => validateTopology(twoVms, 2), 'topology.vms[0].jobs[0].device', 'nvme2', 'one of the devices of vm0: nvme0, nvme1');
  // the VMM's fields are required on a VM
  const noViommu = structuredClone(defaultTopology(jobs(1), vm)) as unknown as { vms: { devices: Record<string, unknown>[] }[] };
  delete noViommu.vms[0].devices[0].viommu;
  inputError(t, () => validateTopology(noViommu, 1), 'topology.vms[0].devices[0].viommu', undefined, 'one of the viommus of vm0: viommu0');
  const noDevice = defaultTopology(jobs(1), vm);
  noDevice.vms[0].devices = [];
  noDevice.hostIommus = [{ id: 'dmar0', controllers: ['nvme-ctrl0'] }];
  inputError(t, () => validateTopology(noDevice, 1), 'topology.vms[0].devices', [], 'at least 1 device: the jobs of vm0 do I/O to one');
});

test('topologyWorkers: VM by VM its vCPUs, a vmm per virtio-iommu, a host-vfio per vmm worker; then a worker per controller', (t) => {
  const b = build(2, { vms: 2, devices: 2, viommus: 2 });
  t.deepEqual(topologyWorkers(b.topology), [
    { role: 'vm0/vcpu0', kind: 'vcpu', vm: 'vm0', of: 'vcpu0' },
    { role: 'vm0/vcpu1', kind: 'vcpu', vm: 'vm0', of: 'vcpu1' },
    { role: 'vm0/vmm/viommu0', kind: 'vmm', vm: 'vm0', of: 'viommu0' },
    { role: 'vm0/vmm/viommu1', kind: 'vmm', vm: 'vm0', of: 'viommu1' },
    { role: 'vm0/host-vfio/viommu0', kind: 'host', vm: 'vm0', of: 'viommu0' },
    { role: 'vm0/host-vfio/viommu1', kind: 'host', vm: 'vm0', of: 'viommu1' },
    { role: 'vm1/vcpu0', kind: 'vcpu', vm: 'vm1', of: 'vcpu0' },
    { role: 'vm1/vcpu1', kind: 'vcpu', vm: 'vm1', of: 'vcpu1' },
    { role: 'vm1/vmm/viommu2', kind: 'vmm', vm: 'vm1', of: 'viommu2' },
    { role: 'vm1/vmm/viommu3', kind: 'vmm', vm: 'vm1', of: 'viommu3' },
    { role: 'vm1/host-vfio/viommu2', kind: 'host', vm: 'vm1', of: 'viommu2' },
    { role: 'vm1/host-vfio/viommu3', kind: 'host', vm: 'vm1', of: 'viommu3' },
    { role: 'nvme-device/nvme-ctrl0', kind: 'device', of: 'nvme-ctrl0' },
    { role: 'nvme-device/nvme-ctrl1', kind: 'device', of: 'nvme-ctrl1' },
    { role: 'nvme-device/nvme-ctrl2', kind: 'device', of: 'nvme-ctrl2' },
    { role: 'nvme-device/nvme-ctrl3', kind: 'device', of: 'nvme-ctrl3' },
  ]);
});

const TWO_VM_TREE = `platform: vm
├─ vm0: strategy strict, driver v5.10, RAM 64 MiB
│  ├─ vCPUs
│  │  ├─ vcpu0 [worker vm0/vcpu0]
│  │  │  └─ job 0 'vmstack' (randread, bs 4k, iodepth 8) → nvme0
│  │  └─ vcpu1 [worker vm0/vcpu1]
│  │     └─ job 1 'vmstack' #1 (randread, bs 4k, iodepth 8) → nvme1
│  ├─ virtio-iommus
│  │  ├─ viommu0: devices nvme0 [workers vm0/vmm/viommu0, vm0/host-vfio/viommu0]
│  │  └─ viommu1: devices nvme1 [workers vm0/vmm/viommu1, vm0/host-vfio/viommu1]
│  ├─ devices
│  │  ├─ nvme0: /dev/nvme0n1 in the guest, endpoint 0x100, domain 1, viommu viommu0, container container0, controller nvme-ctrl0, trusted
│  │  └─ nvme1: /dev/nvme1n1 in the guest, endpoint 0x200, domain 2, viommu viommu1, container container0, controller nvme-ctrl1, trusted
│  └─ VFIO containers
│     └─ container0: devices nvme0, nvme1
└─ vm1: strategy strict, driver v5.10, RAM 64 MiB
   ├─ vCPUs
   │  ├─ vcpu0 [worker vm1/vcpu0]
   │  │  └─ job 2 'vmstack' (randread, bs 4k, iodepth 8) → nvme2
   │  └─ vcpu1 [worker vm1/vcpu1]
   │     └─ job 3 'vmstack' #1 (randread, bs 4k, iodepth 8) → nvme3
   ├─ virtio-iommus
   │  ├─ viommu2: devices nvme2 [workers vm1/vmm/viommu2, vm1/host-vfio/viommu2]
   │  └─ viommu3: devices nvme3 [workers vm1/vmm/viommu3, vm1/host-vfio/viommu3]
   ├─ devices
   │  ├─ nvme2: /dev/nvme0n1 in the guest, endpoint 0x100, domain 1, viommu viommu2, container container1, controller nvme-ctrl2, trusted
   │  └─ nvme3: /dev/nvme1n1 in the guest, endpoint 0x200, domain 2, viommu viommu3, container container1, controller nvme-ctrl3, trusted
   └─ VFIO containers
      └─ container1: devices nvme2, nvme3
host IOMMU units
└─ dmar0: controllers nvme-ctrl0, nvme-ctrl1, nvme-ctrl2, nvme-ctrl3
NVMe controllers
├─ nvme-ctrl0: used by nvme0 of vm0, behind dmar0 [worker nvme-device/nvme-ctrl0]
├─ nvme-ctrl1: used by nvme1 of vm0, behind dmar0 [worker nvme-device/nvme-ctrl1]
├─ nvme-ctrl2: used by nvme2 of vm1, behind dmar0 [worker nvme-device/nvme-ctrl2]
└─ nvme-ctrl3: used by nvme3 of vm1, behind dmar0 [worker nvme-device/nvme-ctrl3]
workers: 16 of 64 slots
`;

test('the tree of 2 VMs with 2 devices behind 2 virtio-iommus each: every component, its ids and its worker', (t) => {
  const b = build(2, { vms: 2, devices: 2, viommus: 2 });
  t.is(formatTopologyTree(b.topology, b.jobs), TWO_VM_TREE);
});

test('the HTML drawing: the same tree as nested lists, workers marked, text escaped', (t) => {
  const b = build(2, { vms: 2, devices: 2, viommus: 2 });
  const html = topologyHtml(b.topology, b.jobs);
  t.is((html.match(/<ul/g) ?? []).length, (html.match(/<\/ul>/g) ?? []).length);
  t.is((html.match(/<li>/g) ?? []).length, TWO_VM_TREE.trimEnd().split('\n').length, 'one item per line of the text tree');
  t.regex(html, /<span class="worker">\[workers vm1\/vmm\/viommu3, vm1\/host-vfio\/viommu3\]<\/span>/);
  t.regex(html, /<li>vm1: strategy strict, driver v5\.10, RAM 64 MiB<ul><li>vCPUs<ul><li>vcpu0 /);
  const named = jobsOf('[<b>&]\nsize=1m\n');
  t.true(topologyHtml(topologyFromFlags(named, vm).topology, named).includes("'&lt;b&gt;&amp;'"));
});

test('JSON file round trip: what the builder makes, written as JSON, reads back the same, job list included', (t) => {
  for (const flags of [
    {},
    { vms: 2, devices: 2, viommus: 2, iommuUnits: 2 },
    { platform: 'bare-metal', devices: 3 },
    { container: 'per-device', devices: 2 },
  ]) {
    const js = jobs(2);
    const built = topologyFromFlags(js, { ...vm, ...flags });
    const path = file('round-trip.json', JSON.stringify(built.topology, null, 2));
    const back = topologyFromFile(path, js);
    t.deepEqual(back.topology, built.topology, JSON.stringify(flags));
    t.deepEqual(back.jobs, built.jobs, 'the fio list once per VM');
  }
});

test("the README's example file, docs/topology-example.json, is a valid topology of two jobs (or of one job, once per placement)", (t) => {
  const path = join(REPO, 'docs', 'topology-example.json');
  const two = topologyFromFile(path, jobs(2));
  t.is(two.topology.vms[0].devices.length, 2);
  t.deepEqual(
    two.topology.vms[0].jobs.map((p) => p.device),
    ['nvme0', 'nvme1'],
  );
  t.is(topologyFromFile(path, jobs(1)).jobs.length, 2);
});

test('--topology FILE: conflicts with the flags and the VM options, refuses what is no topology file, never hangs', (t) => {
  const js = jobs(1);
  const good = file('good.json', JSON.stringify(defaultTopology(js, vm)));
  inputError(t, () => resolveTopology({ file: good, vms: '2' }, js, vm), '--vms', '2', 'not together with --topology FILE');
  inputError(t, () => resolveTopology({ file: good, besideFile: { '--strategy': 'lazy' } }, js, vm), '--strategy', 'lazy', 'not together with --topology FILE');
  inputError(t, () => resolveTopology({ file: good, besideFile: { '--untrusted': true } }, js, vm), '--untrusted', '', 'not together');
  t.deepEqual(resolveTopology({ file: good }, js, vm).topology, defaultTopology(js, vm));

  inputError(t, () => topologyFromFile(join(tmp, 'missing.json'), js), '--topology', join(tmp, 'missing.json'), 'ENOENT');
  inputError(t, () => topologyFromFile(tmp, js), '--topology', tmp, 'it is a directory');
  const fifo = join(tmp, 'topology.fifo');
  execFileSync('mkfifo', [fifo]);
  inputError(t, () => topologyFromFile(fifo, js), '--topology', fifo, 'it is a FIFO');
  const badComma = file('bad-comma.json', '{\n  "platform": "vm",\n  "vms": [,]\n}\n');
  inputError(t, () => topologyFromFile(badComma, js), '--topology', badComma, 'not valid JSON at line 3, column 11');
  const cut = file('cut.json', '{"platform": "vm"');
  inputError(t, () => topologyFromFile(cut, js), '--topology', cut, 'not valid JSON at line 1, column 18');
  const trailing = file('trailing.json', '{}\n\n  x');
  inputError(t, () => topologyFromFile(trailing, js), '--topology', trailing, 'line 3, column 3');

  const bad = defaultTopology(js, vm);
  bad.vms[0].devices[0].viommu = 'viommu7';
  inputError(t, () => topologyFromFile(file('bad.json', JSON.stringify(bad)), js), 'topology.vms[0].devices[0].viommu', 'viommu7', 'viommus of vm0');
  inputError(t, () => topologyFromFile(file('array.json', '[]'), js), 'topology', [], 'an object');
  // three placements for a list of two jobs: not a whole number of copies
  const three = build(1, { vms: 3 }).topology;
  inputError(t, () => topologyFromFile(file('three.json', JSON.stringify(three)), jobs(2)), 'topology.vms[2].jobs[0].job', 2, 'a job index from 0 to 1');
});

test('the report carries the topology with snake_case keys at every depth, values unchanged', (t) => {
  const b = build(1, { devices: 2 });
  const r = topologyReport(b.topology) as unknown as Record<string, unknown>;
  t.deepEqual(Object.keys(r), ['platform', 'vms', 'host_iommus', 'controllers']);
  const vm0 = (r.vms as Record<string, unknown>[])[0];
  t.deepEqual(Object.keys(vm0), ['id', 'ram_bytes', 'strategy', 'driver_generation', 'vcpus', 'jobs', 'viommus', 'containers', 'devices']);
  t.deepEqual((vm0.devices as unknown[])[1], {
    id: 'nvme1',
    controller: 'nvme-ctrl1',
    viommu: 'viommu0',
    endpoint_id: 0x200,
    domain_id: 2,
    container: 'container0',
    untrusted: false,
  });
});
