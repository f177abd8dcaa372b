/**
 * A topology as a tree, for `vmstack topology` (text) and the HTML run report
 * (nested lists): the platform; each VM with its strategy and driver
 * generation, its vCPUs and the fio jobs on each, its virtio-iommus, devices
 * and VFIO containers; the host IOMMU units and the controllers they serve;
 * and, beside each component, the worker thread that runs it
 * (`topologyWorkers`).
 */

import type { FioJobSpec } from '@vmstack/guest-kernel';
import { MAX_WORKERS } from '@vmstack/shm';
import type { DeviceTopology, OsTopology, Topology } from './topology.js';
import { type TopologyWorker, topologyWorkers } from './workers.js';

/** One node of the tree: its text and its children. */
export interface TreeNode {
  text: string;
  children: TreeNode[];
}

const node = (text: string, children: TreeNode[] = []): TreeNode => ({ text, children });

const hex = (n: number) => `0x${n.toString(16)}`;

function mib(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : `${bytes} bytes`;
}

function describeJob(j: FioJobSpec | undefined): string {
  if (!j) return '';
  const kib = j.blockSizeBytes % 1024 === 0 ? `${j.blockSizeBytes / 1024}k` : `${j.blockSizeBytes}`;
  return ` '${j.name}'${j.jobIndex > 0 ? ` #${j.jobIndex}` : ''} (${j.rw}, bs ${kib}, iodepth ${j.iodepth}${j.filename ? `, ${j.filename}` : ''})`;
}

/** The tree of `t`; `jobs` is the run's job list (for the jobs' names and shapes), if known. */
export function topologyTree(t: Topology, jobs: readonly FioJobSpec[] = []): TreeNode[] {
  const workers = topologyWorkers(t);
  const workerOf = (kind: TopologyWorker['kind'], of: string, vm?: string) => workers.find((w) => w.kind === kind && w.of === of && w.vm === vm)?.role;
  const bareMetal = t.platform === 'bare-metal';
  const unitOf = (controller: string) => t.hostIommus.find((u) => u.controllers.includes(controller))?.id ?? '(none)';

  const osNode = (vm: OsTopology): TreeNode => {
    const firstDevice = vm.devices[0]?.id;
    const vcpus = vm.vcpus.map((c) => {
      const on = vm.jobs.filter((p) => p.vcpu === c.id);
      const role = workerOf('vcpu', `${bareMetal ? 'cpu' : 'vcpu'}${c.id}`, vm.id);
      return node(
        `${bareMetal ? 'cpu' : 'vcpu'}${c.id} [worker ${role}]${on.length === 0 ? ': idle' : ''}`,
        on.map((p) => node(`job ${p.job}${describeJob(jobs[p.job])} → ${p.device ?? firstDevice ?? '(no device)'}`)),
      );
    });
    const deviceNode = (d: DeviceTopology, k: number): TreeNode => {
      const parts = [`/dev/nvme${k}n1 in the ${bareMetal ? 'host' : 'guest'}`];
      if (d.endpointId !== undefined) parts.push(`endpoint ${hex(d.endpointId)}`);
      if (d.domainId !== undefined) parts.push(`domain ${d.domainId}`);
      if (d.viommu !== undefined) parts.push(`viommu ${d.viommu}`);
      if (d.container !== undefined) parts.push(`container ${d.container}`);
      parts.push(`controller ${d.controller}`, d.untrusted ? 'untrusted' : 'trusted');
      return node(`${d.id}: ${parts.join(', ')}`);
    };
    const children = [node(bareMetal ? 'CPUs' : 'vCPUs', vcpus)];
    if (!bareMetal) {
      children.push(
        node(
          'virtio-iommus',
          vm.viommus.map((v) => {
            const behind = vm.devices.filter((d) => d.viommu === v.id).map((d) => d.id);
            return node(`${v.id}: devices ${behind.join(', ') || '(none)'} [workers ${workerOf('vmm', v.id, vm.id)}, ${workerOf('host', v.id, vm.id)}]`);
          }),
        ),
      );
    }
    children.push(node('devices', vm.devices.map(deviceNode)));
    if (!bareMetal) {
      children.push(
        node(
          'VFIO containers',
          vm.containers.map((c) =>
            node(
              `${c.id}: devices ${
                vm.devices
                  .filter((d) => d.container === c.id)
                  .map((d) => d.id)
                  .join(', ') || '(none)'
              }`,
            ),
          ),
        ),
      );
    }
    const head = bareMetal
      ? `${vm.id} (the host OS): strategy ${vm.strategy}, RAM ${mib(vm.ramBytes)}`
      : `${vm.id}: strategy ${vm.strategy}, driver ${vm.driverGeneration}, RAM ${mib(vm.ramBytes)}`;
    return node(head, children);
  };

  const users = new Map<string, string>();
  for (const vm of t.vms) for (const d of vm.devices) users.set(d.controller, `${d.id} of ${vm.id}`);
  return [
    node(`platform: ${t.platform}`, t.vms.map(osNode)),
    node(
      'host IOMMU units',
      t.hostIommus.map((u) => node(`${u.id}: controllers ${u.controllers.join(', ')}`)),
    ),
    node(
      'NVMe controllers',
      t.controllers.map((c) =>
        node(`${c.id}: ${users.has(c.id) ? `used by ${users.get(c.id)}` : 'unused'}, behind ${unitOf(c.id)} [worker ${workerOf('device', c.id)}]`),
      ),
    ),
    node(`workers: ${workers.length} of ${MAX_WORKERS} slots`),
  ];
}

/** The tree as text, drawn with box-drawing lines as `tree` draws directories. */
export function formatTopologyTree(t: Topology, jobs: readonly FioJobSpec[] = []): string {
  const lines: string[] = [];
  const walk = (n: TreeNode, prefix: string, last: boolean, root: boolean) => {
    lines.push(root ? n.text : `${prefix}${last ? '└─ ' : '├─ '}${n.text}`);
    const inner = root ? '' : `${prefix}${last ? '   ' : '│  '}`;
    n.children.forEach((c, i) => walk(c, inner, i === n.children.length - 1, false));
  };
  for (const n of topologyTree(t, jobs)) walk(n, '', true, true);
  return `${lines.join('\n')}\n`;
}
