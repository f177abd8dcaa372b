import type { FioJobSpec } from '@vmstack/guest-kernel';
import { DEFAULT_PROFILE_PATH, InputError, loadProfile, NEVER_NS } from '@vmstack/shm';
import test, { type ExecutionContext } from 'ava';
import { jobsFromCommandLine } from '../src/fio/options.js';
import { runStack } from '../src/stack/run-stack.js';
import { planRings, planStack } from '../src/topology/plan.js';
import { defaultTopology, type VmPlatformTopology, validateTopology } from '../src/topology/topology.js';

const MiB = 1024 * 1024;
const profile = loadProfile(DEFAULT_PROFILE_PATH);

function jobs(numjobs: number): FioJobSpec[] {
  return jobsFromCommandLine({ rw: 'randread', bs: '4k', iodepth: '8', size: '1m', numjobs: String(numjobs) }).jobs;
}

const options = { strategy: 'strict', driverGeneration: 'v5.10', guestRamBytes: 64 * MiB } as const;

function topology(numjobs: number): VmPlatformTopology {
  return defaultTopology(jobs(numjobs), options);
}

/** Asserts a one-line InputError naming the field and value, whose message says what is allowed. */
function inputError(t: ExecutionContext, fn: () => unknown, field: string, value: unknown, ...allowed: (string | RegExp)[]): InputError {
  const e = t.throws(fn, { instanceOf: InputError });
  t.is(e.field, field, 'names the field');
  t.deepEqual(e.value, value, 'quotes the value');
  t.true(e.message.startsWith(`${field}: `), e.message);
  t.false(e.message.includes('\n'), 'one line');
  for (const a of allowed) {
    if (typeof a === 'string') t.true(e.message.includes(a), `message "${e.message}" says "${a}"`);
    else t.regex(e.message, a);
  }
  return e;
}

/** A topology changed in place by `edit`, checked against `jobCount` jobs. */
function edited(edit: (t: VmPlatformTopology) => void, numjobs = 1): () => void {
  const top = topology(numjobs);
  edit(top);
  return () => validateTopology(top, numjobs);
}

test('defaultTopology, 1 job: one VM with one vCPU running job 0, one viommu, one device (endpoint 0x100, domain 1) in one container, one IOMMU unit, one controller', (t) => {
  const top = topology(1);
  t.deepEqual(top, {
    platform: 'vm',
    vms: [
      {
        id: 'vm0',
        ramBytes: 64 * MiB,
        strategy: 'strict',
        driverGeneration: 'v5.10',
        vcpus: [{ id: 0 }],
        jobs: [{ job: 0, vcpu: 0 }],
        viommus: [{ id: 'viommu0' }],
        containers: [{ id: 'container0' }],
        devices: [{ id: 'nvme0', controller: 'nvme-ctrl0', viommu: 'viommu0', endpointId: 0x100, domainId: 1, container: 'container0', untrusted: false }],
      },
    ],
    hostIommus: [{ id: 'dmar0', controllers: ['nvme-ctrl0'] }],
    controllers: [{ id: 'nvme-ctrl0' }],
  });
  t.deepEqual(JSON.parse(JSON.stringify(top)), top, 'plain data: survives JSON');
  t.notThrows(() => validateTopology(top, 1));
});

test('defaultTopology, 4 jobs: one vCPU per job, job i on vCPU i, still one device; untrusted and the strategy go where they belong', (t) => {
  const top = defaultTopology(jobs(4), { ...options, strategy: 'bounce', untrusted: true });
  t.is(top.vms.length, 1);
  const vm = top.vms[0];
  t.deepEqual(vm.vcpus, [{ id: 0 }, { id: 1 }, { id: 2 }, { id: 3 }]);
  t.deepEqual(
    vm.jobs,
    [0, 1, 2, 3].map((i) => ({ job: i, vcpu: i })),
  );
  t.is(vm.strategy, 'bounce');
  t.is(vm.devices.length, 1);
  t.true(vm.devices[0].untrusted);
  t.is(vm.viommus.length, 1);
  t.is(vm.containers.length, 1);
  t.notThrows(() => validateTopology(top, 4));
});

test('validateTopology: the platform, ids, references and job placement, each error naming field, value and what is allowed', (t) => {
  inputError(t, () => validateTopology(null, 1), 'topology', null, 'an object');
  inputError(
    t,
    edited((x) => ((x as { platform: string }).platform = 'xen')),
    'topology.platform',
    'xen',
    'one of vm, bare-metal',
  );
  inputError(
    t,
    edited((x) => (x.vms = [])),
    'topology.vms',
    [],
    'a list of at least 1',
  );
  inputError(
    t,
    edited((x) => x.vms.push({ ...structuredClone(x.vms[0]), jobs: [] })),
    'topology.vms[1].id',
    'vm0',
    "an id no other of the topology's VMs has",
  );
  inputError(
    t,
    edited((x) => (x.vms[0].ramBytes = 1000)),
    'topology.vms[0].ramBytes',
    1000,
    'a whole number of 4096-byte pages',
  );
  inputError(
    t,
    edited((x) => ((x.vms[0] as { strategy: string }).strategy = 'eager')),
    'topology.vms[0].strategy',
    'eager',
    'one of direct, strict, lazy, bounce',
  );
  inputError(
    t,
    edited((x) => ((x.vms[0] as { driverGeneration: string }).driverGeneration = 'v4')),
    'topology.vms[0].driverGeneration',
    'v4',
    'one of v5.10, v6.x',
  );
  inputError(
    t,
    edited((x) => (x.vms[0].vcpus[1].id = 5), 2),
    'topology.vms[0].vcpus[1].id',
    5,
    '0..1 in order',
  );
  inputError(
    t,
    edited((x) => (x.vms[0].jobs[0].vcpu = 3), 2),
    'topology.vms[0].jobs[0].vcpu',
    3,
    'a vCPU of vm0: 0..1',
  );
  inputError(
    t,
    edited((x) => (x.vms[0].jobs[1].job = 7), 2),
    'topology.vms[0].jobs[1].job',
    7,
    'a job index from 0 to 1',
  );
  inputError(
    t,
    edited((x) => (x.vms[0].jobs[1].job = 0), 2),
    'topology.vms[0].jobs[1].job',
    0,
    'it runs at vm0 vCPU 0 already',
  );
  inputError(
    t,
    edited((x) => x.vms[0].jobs.pop(), 2),
    'topology.vms[].jobs',
    1,
    'job 1 is on none',
  );
  inputError(
    t,
    edited((x) => (x.vms[0].devices[0].viommu = 'viommu9')),
    'topology.vms[0].devices[0].viommu',
    'viommu9',
    'one of the viommus of vm0: viommu0',
  );
  inputError(
    t,
    edited((x) => (x.vms[0].devices[0].container = 'c1')),
    'topology.vms[0].devices[0].container',
    'c1',
    'one of the VFIO containers of vm0: container0',
  );
  inputError(
    t,
    edited((x) => (x.vms[0].devices[0].controller = 'nvme-ctrl1')),
    'topology.vms[0].devices[0].controller',
    'nvme-ctrl1',
    'one of the controllers: nvme-ctrl0',
  );
  inputError(
    t,
    edited((x) => (x.vms[0].devices[0].endpointId = -1)),
    'topology.vms[0].devices[0].endpointId',
    -1,
    'an integer from 0 to 2^32-1',
  );
  inputError(
    t,
    edited((x) => (x.vms[0].devices[0].domainId = 0)),
    'topology.vms[0].devices[0].domainId',
    0,
    'an integer from 1 to 2^32-1',
  );
  inputError(
    t,
    edited((x) => {
      x.controllers.push({ id: 'nvme-ctrl1' });
      x.hostIommus[0].controllers.push('nvme-ctrl1');
      x.vms[0].devices.push({ ...x.vms[0].devices[0], id: 'nvme1', controller: 'nvme-ctrl1' });
    }),
    'topology.vms[0].devices[1].endpointId',
    0x100,
    'an endpoint id no other device behind viommu0 has',
  );
  inputError(
    t,
    edited((x) => x.vms[0].devices.push({ ...x.vms[0].devices[0], id: 'nvme1', endpointId: 0x200 })),
    'topology.vms[0].devices[1].controller',
    'nvme-ctrl0',
    'device nvme0 has it',
  );
  inputError(
    t,
    edited((x) => x.controllers.push({ id: 'nvme-ctrl0' })),
    'topology.controllers[1].id',
    'nvme-ctrl0',
    "an id no other of the topology's controllers has",
  );
  inputError(
    t,
    edited((x) => x.controllers.push({ id: 'nvme-ctrl1' })),
    'topology.hostIommus',
    'nvme-ctrl1',
    'none serves nvme-ctrl1',
  );
  inputError(
    t,
    edited((x) => x.hostIommus.push({ id: 'dmar1', controllers: ['nvme-ctrl0'] })),
    'topology.hostIommus[1].controllers[0]',
    'nvme-ctrl0',
    'dmar0 serves it already',
  );
});

test('planStack, default topology of 2 jobs: vCPU workers, then vmm, host-vfio, nvme-device; every ring wired to the right workers', (t) => {
  const js = jobs(2);
  const plan = planStack(defaultTopology(js, options), { jobs: js, profile });
  t.deepEqual(
    plan.workers.map((w) => [w.role, w.kind, w.startEotNs]),
    [
      ['vm0/vcpu0', 'vcpu', 0],
      ['vm0/vcpu1', 'vcpu', 0],
      ['vm0/vmm/viommu0', 'vmm', NEVER_NS],
      ['vm0/host-vfio/viommu0', 'host', NEVER_NS],
      ['nvme-device/nvme-ctrl0', 'device', 0],
    ],
  );
  const vm = plan.vms[0];
  t.deepEqual(vm.vcpuWorkers, [0, 1]);
  t.like(vm.viommus[0], { vmm: 2, host: 3, vcpus: [0, 1], devices: [0], container: 0 });
  t.like(vm.devices[0], { worker: 4, vcpus: [0, 1], ioVcpus: [0, 1] });
  t.deepEqual(
    planRings(vm).map((r) => [r.name, r.producer, r.consumer]),
    [
      ['doorbell0', 0, 4],
      ['doorbell1', 1, 4],
      ['irq0', 4, 0],
      ['irq1', 4, 1],
      ['kick0', 0, 2],
      ['kick1', 1, 2],
      ['used0', 2, 0],
      ['used1', 2, 1],
      ['inval', 3, 4],
    ],
  );
  t.deepEqual(vm.viommus[0].vfioRpc, { capacityRecords: 64, server: 3, client: 2 });
  t.like(vm.devices[0], { domainId: 1, endpointId: 0x100, vcpuOfCq: [0, 0, 1] });
  t.is(vm.devices[0].iovaDomain.limitPfn, 2 ** 36 - 1);
  t.deepEqual(vm.viommus[0].endpointIds, [0x100], "the VMM's virtio-iommu has the one device's endpoint and no other");
  t.deepEqual(vm.jobOfVcpu, [0, 1]);
  t.is(vm.regions.guestLayout.devices[0].queues.length, 2, 'one I/O queue pair per vCPU');
  t.is(vm.devices[0].flushQueue, null);
  t.is(vm.devices[0].bouncePool, null);
  t.is(vm.regions.swiotlb, null);
  t.deepEqual(vm.devices[0].iovaDomain.reservedPfns, [[1, vm.regions.guestLayout.heapStartBytes / 4096]], 'the coherent region, IOVA = GPA');
  t.is(vm.lockScope, '', 'one VM: lock names are the kernel names');
  t.deepEqual([vm.viommus[0].requestLockName, vm.viommus[0].mutexName, vm.devices[0].iovaDomain.lockSuffix], ['viommu->request_lock', 'viommu_dev->mutex', '']);
  t.deepEqual(
    plan.hostLocks.map((l) => [l.name, l.kind]),
    [
      ['iommu->lock', 'mutex'],
      ['qi->q_lock', 'spinlock'],
      ['mmap_lock', 'rwsem'],
    ],
    'one container, one host IOMMU unit, one VMM process',
  );
  t.is(vm.mmapLockName, 'mmap_lock');
});

test('planStack: jobs placed out of order run in vCPU order; the strategy of the VM decides the regions', (t) => {
  const js = jobs(2);
  const top = defaultTopology(js, { ...options, strategy: 'bounce' });
  top.vms[0].jobs = [
    { job: 0, vcpu: 1 },
    { job: 1, vcpu: 0 },
  ];
  const vm = planStack(top, { jobs: js, profile }).vms[0];
  t.deepEqual(vm.jobOfVcpu, [1, 0]);
  t.not(vm.devices[0].bouncePool, null);
  t.is(vm.devices[0].iovaDomain.reservedPfns.length, 2, 'the coherent region and the pool range');
});

/** The default topology of two jobs, rebuilt as two VMs of one job each on one host IOMMU unit. */
function twoVmTopology(js: ReturnType<typeof jobs>, o = options): VmPlatformTopology {
  const top = defaultTopology(js, o);
  top.vms[0].vcpus = [{ id: 0 }];
  top.vms[0].jobs = [{ job: 0, vcpu: 0 }];
  top.controllers.push({ id: 'nvme-ctrl1' });
  top.hostIommus[0].controllers.push('nvme-ctrl1');
  top.vms.push({
    ...structuredClone(top.vms[0]),
    id: 'vm1',
    jobs: [{ job: 1, vcpu: 0 }],
    viommus: [{ id: 'viommu1' }],
    containers: [{ id: 'container1' }],
    devices: [{ ...top.vms[0].devices[0], id: 'nvme1', controller: 'nvme-ctrl1', viommu: 'viommu1', container: 'container1' }],
  });
  return top;
}

test('planStack, two VMs: each its vCPUs, vmm and host-vfio, then a device per controller; lock names scoped per VM, host locks per instance', (t) => {
  const js = jobs(2);
  const plan = planStack(twoVmTopology(js), { jobs: js, profile });
  t.deepEqual(
    plan.workers.map((w) => w.role),
    [
      'vm0/vcpu0',
      'vm0/vmm/viommu0',
      'vm0/host-vfio/viommu0',
      'vm1/vcpu0',
      'vm1/vmm/viommu1',
      'vm1/host-vfio/viommu1',
      'nvme-device/nvme-ctrl0',
      'nvme-device/nvme-ctrl1',
    ],
  );
  t.deepEqual(
    plan.vms.map((vm) => [vm.vcpuWorkers, vm.viommus[0].vmm, vm.viommus[0].host, vm.devices[0].worker]),
    [
      [[0], 1, 2, 6],
      [[3], 4, 5, 7],
    ],
  );
  t.deepEqual(
    plan.vms.map((vm) => vm.jobOfVcpu),
    [[0], [1]],
  );
  t.deepEqual(
    plan.vms.map((vm) => vm.lockScope),
    ['vm0:', 'vm1:'],
  );
  t.deepEqual(
    plan.hostLocks.map((l) => l.name),
    ['iommu->lock/container0', 'iommu->lock/container1', 'qi->q_lock', 'mmap_lock/vm0', 'mmap_lock/vm1'],
    'a container each, one unit shared, a VMM process each',
  );
  t.deepEqual(
    plan.vms.map((vm) => [vm.containers[0].lockName, vm.containers[0].hostIommu.qiLockName, vm.mmapLockName]),
    [
      ['iommu->lock/container0', 'qi->q_lock', 'mmap_lock/vm0'],
      ['iommu->lock/container1', 'qi->q_lock', 'mmap_lock/vm1'],
    ],
  );
  t.deepEqual(
    planRings(plan.vms[1]).map((r) => [r.name, r.producer, r.consumer]),
    [
      ['vm1:doorbell0', 3, 7],
      ['vm1:irq0', 7, 3],
      ['vm1:kick0', 3, 4],
      ['vm1:used0', 4, 3],
      ['vm1:inval', 5, 7],
    ],
  );
});

test('planStack refuses, in one line, a valid shape the workers cannot run yet', (t) => {
  const js = jobs(2);
  const twoContainers = defaultTopology(js, options);
  twoContainers.vms[0].containers.push({ id: 'container1' });
  twoContainers.controllers.push({ id: 'nvme-ctrl1' });
  twoContainers.hostIommus[0].controllers.push('nvme-ctrl1');
  twoContainers.vms[0].devices.push({
    ...twoContainers.vms[0].devices[0],
    id: 'nvme1',
    controller: 'nvme-ctrl1',
    endpointId: 0x200,
    domainId: 2,
    container: 'container1',
  });
  inputError(
    t,
    () => planStack(twoContainers, { jobs: js, profile }),
    'topology.vms[0].devices[1].container',
    'container1',
    'the drives behind one virtio-iommu share its VFIO container',
  );

  const idleVcpu = defaultTopology(js, options);
  idleVcpu.vms[0].jobs = [
    { job: 0, vcpu: 0 },
    { job: 1, vcpu: 0 },
  ];
  inputError(t, () => planStack(idleVcpu, { jobs: js, profile }), 'topology.vms[0].vcpus[0]', [0, 1], 'exactly 1 job on each vCPU');

  const small = defaultTopology(js, { ...options, guestRamBytes: 1 * MiB });
  inputError(t, () => planStack(small, { jobs: js, profile }), '--guest-ram', 1 * MiB, 'queues, rings');
});

test('runStack takes a topology: one it cannot run is refused before any worker starts, the default one runs as without it', async (t) => {
  const js = jobsFromCommandLine({ rw: 'read', bs: '4k', iodepth: '4', size: '256k' });
  const base = {
    jobs: js.jobs,
    jobOptions: js.jobOptions,
    globalOptions: {},
    strategy: 'strict',
    clock: 'virtual',
    profile,
    quantumNs: 0,
    driverGeneration: 'v5.10',
    bufferContiguity: 'none',
    guestRamBytes: 64 * MiB,
    spinLoads: 2000,
    dilation: 1,
    transport: 'in-thread',
  } as const;
  const top = defaultTopology(js.jobs, base);
  top.vms[0].viommus.push({ id: 'viommu1' });
  const e = await t.throwsAsync(runStack({ ...base, topology: top }), { instanceOf: InputError });
  t.is(e.field, 'topology.vms[0].viommus[1]', 'a virtio-iommu with no drive behind it');
  const a = await runStack(base);
  const b = await runStack({ ...base, topology: defaultTopology(js.jobs, base) });
  t.deepEqual(b.jobs, a.jobs);
  t.deepEqual(b.vmstack.counters, a.vmstack.counters);
});
