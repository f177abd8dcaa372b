/**
 * A virtio-iommu backend wired for a test: a real split virtqueue in guest
 * RAM, the device mutex, a virtual clock, and a fake VFIO container
 * (VfioContainerPort, from shm) that records every ioctl and answers with the
 * errno the test chooses, `hostNs` later. `request` writes one request, kicks
 * the device and returns its status, the ioctls it made and the model time
 * it took.
 */

import {
  attachGuestMemory,
  DEFAULT_PROFILE_PATH,
  type GuestMemory,
  type HostIommuFault,
  LockTable,
  loadProfile,
  ModelClock,
  readDeviceFeatures,
  readTail,
  requestSizeBytes,
  type VfioContainerPort,
  type VfioMapDmaArgs,
  type VfioUnmapDmaArgs,
  VirtqueueDriver,
  type VirtqueueLayout,
  viommuGetWriteDescOffsetBytes,
  virtqueueLayout,
  writeDriverFeatures,
} from '@vmstack/shm';
import { VIOMMU_DEVICE_MUTEX, type ViommuDeviceConfig, type ViommuDeviceCosts, VirtioIommuDevice } from '../../src/index.js';

const profile = loadProfile(DEFAULT_PROFILE_PATH);
const VQ_GPA = 0x1000;
const REQ_GPA = 0x10000;
const GUEST_RAM_BYTES = 1024 * 1024;
const VQ_ENTRIES = 16;
/** model time between two kicks: every request finds the device idle */
const KICK_INTERVAL_NS = 1_000_000;

export type VfioCall = ['map', VfioMapDmaArgs] | ['unmap', VfioUnmapDmaArgs];

export class FakeVfio implements VfioContainerPort {
  readonly calls: VfioCall[] = [];
  mapErrno = 0;
  unmapErrno = 0;
  /** the host's fault queue, read() one record at a time */
  readonly faults: HostIommuFault[] = [];
  faultReads = 0;
  constructor(private readonly hostNs: number) {}
  readFault(nowNs: number) {
    this.faultReads++;
    return { fault: this.faults.shift() ?? null, doneNs: nowNs };
  }
  mapDma(args: VfioMapDmaArgs, nowNs: number) {
    this.calls.push(['map', { ...args }]);
    return { errno: this.mapErrno, doneNs: nowNs + this.hostNs };
  }
  unmapDma(args: VfioUnmapDmaArgs, nowNs: number) {
    this.calls.push(['unmap', { ...args }]);
    return { errno: this.unmapErrno, unmappedBytes: this.unmapErrno ? 0 : args.sizeBytes, doneNs: nowNs + this.hostNs };
  }
}

export interface RequestOutcome {
  status: number;
  /** the used length the device returned (0: the buffer came back unwritten) */
  usedBytes: number;
  calls: VfioCall[];
  elapsedNs: number;
}

export interface ViommuRig {
  mem: GuestMemory;
  device: VirtioIommuDevice;
  vfio: FakeVfio;
  /** the driver's end of the event queue (null without one) */
  events: VirtqueueDriver | null;
  eventLayout: VirtqueueLayout | null;
  /** write one request of `type` at the request buffer (through `write`), kick, and read the device's answer */
  request(type: number, write: (gpa: number) => void): RequestOutcome;
}

/** Where the rig's configuration page is, when a test asks for one. */
export const CONFIG_GPA = 0xf000;

export interface ViommuRigOptions {
  endpointIds: number[];
  pageSizeMask?: bigint;
  hostNs: number;
  /** the features the device offers (default: the device's) */
  features?: number;
  /** the features the driver accepts: the rig then gives the device a configuration page and negotiates through it */
  driverFeatures?: number;
  probeSizeBytes?: number;
  domainRange?: { start: number; end: number };
  /** the device's costs (default: the default profile's) and how an UNMAP reaches VFIO (default: per mapping) */
  costs?: ViommuDeviceCosts;
  vfioUnmap?: ViommuDeviceConfig['vfioUnmap'];
  /** an event queue of this many entries at EVENT_QUEUE_GPA (its driver is the rig's `events`) */
  eventQueueEntries?: number;
  /** the device reads the host's fault queue and reports (vmm-path.ts) */
  reportFaults?: boolean;
}

/** Where the rig's event queue is, when a test asks for one. */
export const EVENT_QUEUE_GPA = 0x20000;

export function viommuRig(o: ViommuRigOptions): ViommuRig {
  const mem = attachGuestMemory(new SharedArrayBuffer(GUEST_RAM_BYTES));
  const layout = virtqueueLayout(VQ_ENTRIES, VQ_GPA);
  const driver = VirtqueueDriver.init(mem, layout);
  const locks = LockTable.attach(LockTable.allocate([{ name: VIOMMU_DEVICE_MUTEX, kind: 'mutex' }]), 0);
  const vfio = new FakeVfio(o.hostNs);
  const clock = new ModelClock('virtual');
  const withConfig = o.driverFeatures !== undefined;
  const eventLayout = o.eventQueueEntries ? virtqueueLayout(o.eventQueueEntries, EVENT_QUEUE_GPA) : null;
  const events = eventLayout ? VirtqueueDriver.init(mem, eventLayout) : null;
  const device = new VirtioIommuDevice(mem, layout, vfio, locks, clock, o.costs ?? profile, {
    endpointIds: o.endpointIds,
    pageSizeMask: o.pageSizeMask,
    features: o.features,
    probeSizeBytes: o.probeSizeBytes,
    domainRange: o.domainRange,
    configGpa: withConfig ? CONFIG_GPA : undefined,
    guestRamBytes: GUEST_RAM_BYTES,
    vfioUnmap: o.vfioUnmap,
    eventQueue: eventLayout,
    reportFaults: o.reportFaults,
  });
  if (withConfig) writeDriverFeatures(mem, CONFIG_GPA, (o.driverFeatures ?? 0) & readDeviceFeatures(mem, CONFIG_GPA));
  const probeSize = o.probeSizeBytes;
  let kickNs = 0;
  const request = (type: number, write: (gpa: number) => void): RequestOutcome => {
    const known = type >= 1 && type <= 5;
    const out = known ? viommuGetWriteDescOffsetBytes(type, probeSize) : 8;
    const inLen = known ? requestSizeBytes(type, probeSize) - out : 4;
    write(REQ_GPA);
    if (!driver.addBuf([{ gpa: REQ_GPA, lenBytes: out }], [{ gpa: REQ_GPA + out, lenBytes: inLen }], 1)) throw new Error('queue full');
    driver.publish();
    kickNs += KICK_INTERVAL_NS;
    const before = vfio.calls.length;
    device.virtio_iommu_handle_command(kickNs);
    const used = driver.getBuf();
    if (!used) throw new Error('the device returned nothing');
    return { status: readTail(mem, REQ_GPA + out + inLen - 4), usedBytes: used.lenBytes, calls: vfio.calls.slice(before), elapsedNs: clock.nowNs() - kickNs };
  };
  return { mem, device, vfio, events, eventLayout, request };
}
