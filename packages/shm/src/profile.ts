/**
 * The cost profile: one number per physical action of the modelled stack
 * (guest vCPU work, VM exits, the VMM's virtio-iommu backend, vfio_iommu_type1
 * in the host kernel, the NVMe drive and its PCIe link, kernel time
 * constants), each with the source it was taken from.
 *
 * One profile serves every block size and DMA strategy: a value is the cost of
 * an action, never a number fitted to a result. Sources and derivations live
 * in `profiles/README.md`; the default profile is `profiles/i5-10210U.json`.
 *
 * File format (JSON):
 * ```json
 * { "name": "i5-10210U", "description": "…",
 *   "values": { "vmExitKernelNs": { "value": 600, "source": "[S15]: …" }, … } }
 * ```
 * Every key carries its unit in its name (`…Ns`, `…BytesPerNs`, `…Count`, `…Bytes`).
 * `ns` values are integer model nanoseconds (the model clocks are integers);
 * 0 is accepted for an ns cost so an ablation can switch an action off.
 * Every key is required, none may be added, and every value needs a source.
 */

import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError, inputExcerpt } from './errors.js';
import { closestName, editDistance } from './suggest.js';

export type CostUnit = 'ns' | 'bytes/ns' | 'count' | 'bytes';

/** Schema of one profile key: its unit, plausible bounds and meaning. */
export interface ProfileKeySpec<K extends string = string> {
  readonly key: K;
  readonly unit: CostUnit;
  /** inclusive lower bound */
  readonly min: number;
  /** inclusive upper bound */
  readonly max: number;
  readonly description: string;
}

const NS_PER_MS = 1_000_000;
const NS_PER_S = 1_000_000_000;

/**
 * Every key of a profile, in file order. Bounds are plausibility limits that
 * catch unit slips (µs typed as ns, MB/s typed as bytes/ns), not the sources'
 * ranges; the sources are in profiles/README.md.
 */
export const PROFILE_KEYS = [
  // Guest vCPU (charged on the guest's model clock)
  {
    key: 'fioSubmitNs',
    unit: 'ns',
    min: 0,
    max: 100_000,
    description: 'fio user-space work + io_submit syscall + aio + bio/blk-mq request setup, per I/O (excluding DMA mapping and nvme_queue_rq)',
  },
  {
    key: 'guestPinUserPagePerPageNs',
    unit: 'ns',
    min: 0,
    max: 10_000,
    description: 'get_user_pages_fast pin (and its unpin at completion) of one 4 KiB page for O_DIRECT',
  },
  {
    key: 'nvmeQueueRqNs',
    unit: 'ns',
    min: 0,
    max: 50_000,
    description: 'nvme_queue_rq: command setup, SQE copy into the SQ, doorbell MMIO write (no exit: passed-through BAR)',
  },
  { key: 'nvmeSetupPrpPerPageNs', unit: 'ns', min: 0, max: 5_000, description: 'building one PRP entry' },
  {
    key: 'guestIrqDeliveryNs',
    unit: 'ns',
    min: 0,
    max: 100_000,
    description: 'vCPU cost of one device interrupt without posted interrupts: external-interrupt exit + host injection + guest handler entry/exit + EOI exit',
  },
  { key: 'nvmeIrqPerCqeNs', unit: 'ns', min: 0, max: 50_000, description: 'nvme_irq/nvme_handle_cqe + blk_mq_complete_request, per completion entry' },
  { key: 'fioReapPerIoNs', unit: 'ns', min: 0, max: 100_000, description: 'aio completion + io_getevents + fio per-I/O accounting' },
  {
    key: 'fioSubmitUserNs',
    unit: 'ns',
    min: 0,
    max: 100_000,
    description: "fio's user-space share of fioSubmitNs: preparing one I/O and queueing it (for io_uring: filling its SQE), before any system call",
  },
  {
    key: 'syscallEntryExitNs',
    unit: 'ns',
    min: 0,
    max: 100_000,
    description: 'one system call entry and exit with the mitigations of the CPU (a null syscall); fioSubmitNs holds one per I/O (io_submit or pread)',
  },
  { key: 'iommuDmaMapCallNs', unit: 'ns', min: 0, max: 50_000, description: 'dma-iommu bookkeeping per iommu_dma_map_page/_sg or unmap call' },
  { key: 'iommuDmaSgPerSegmentNs', unit: 'ns', min: 0, max: 10_000, description: 'per scatter-list segment work in iommu_dma_map_sg' },
  { key: 'iovaRcacheHitNs', unit: 'ns', min: 0, max: 10_000, description: 'IOVA alloc or free served by the per-CPU rcache' },
  { key: 'iovaRbtreeOpNs', unit: 'ns', min: 0, max: 1_000_000, description: 'IOVA alloc or free through the rbtree under iova_rbtree_lock' },
  {
    key: 'memcpyBytesPerNs',
    unit: 'bytes/ns',
    min: 0.1,
    max: 200,
    description: 'single-core memcpy bandwidth when the bytes are not in the cache: from and to DRAM (bytes per ns = GB/s)',
  },
  {
    key: 'memcpyCacheBytesPerNs',
    unit: 'bytes/ns',
    min: 0.1,
    max: 400,
    description: 'single-core memcpy bandwidth when source and destination are in the last-level cache (bytes per ns = GB/s)',
  },
  { key: 'memsetBytesPerNs', unit: 'bytes/ns', min: 0.1, max: 400, description: 'single-core memset bandwidth (bytes per ns = GB/s)' },
  { key: 'guestPageAllocNs', unit: 'ns', min: 0, max: 100_000, description: 'alloc_pages + free of one 4 KiB page' },
  {
    key: 'pageCachePerPageNs',
    unit: 'ns',
    min: 0,
    max: 100_000,
    description: 'page cache, per 4 KiB page looked up, added or dropped: xarray walk, page reference, LRU (buffered I/O, direct=0)',
  },
  { key: 'bouncePoolListOpNs', unit: 'ns', min: 0, max: 10_000, description: 'bounce pool: per-class lock + one list push or pop' },
  { key: 'flushQueueAddNs', unit: 'ns', min: 0, max: 10_000, description: 'adding one entry to the lazy per-CPU flush queue' },
  { key: 'swiotlbSlotSearchNs', unit: 'ns', min: 0, max: 1_000_000, description: 'finding free swiotlb slots under its lock' },
  { key: 'viommuRequestPrepareNs', unit: 'ns', min: 0, max: 100_000, description: 'virtio-iommu driver: build a request + virtqueue_add_sgs' },
  { key: 'vmExitKernelNs', unit: 'ns', min: 0, max: 100_000, description: 'VM exit + entry handled in KVM' },
  { key: 'vmExitUserspaceRoundTripNs', unit: 'ns', min: 0, max: 1_000_000, description: 'VM exit to the VMM in user space and back' },
  // VMM (crosvm-like virtio-iommu device)
  {
    key: 'vmmViommuRequestNs',
    unit: 'ns',
    min: 0,
    max: 1_000_000,
    description: 'VMM: pop the request, parse, update the domain mapping tree, push the used element',
  },
  { key: 'vfioIoctlSyscallNs', unit: 'ns', min: 0, max: 100_000, description: 'ioctl entry/exit + VFIO dispatch' },
  {
    key: 'hostThreadWakeupNs',
    unit: 'ns',
    min: 0,
    max: 10_000_000,
    description: 'waking a blocked host thread (the VMM device worker) through an eventfd: wakeup + switch-in',
  },
  {
    key: 'seccompFilterNs',
    unit: 'ns',
    min: 0,
    max: 100_000,
    description: "one syscall's pass through a seccomp BPF filter in a jailed VMM device process (crosvm's minijail sandbox)",
  },
  // Host kernel, vfio_iommu_type1 (under iommu->lock)
  { key: 'vfioDmaDoMapBaseNs', unit: 'ns', min: 0, max: 1_000_000, description: 'vfio_dma_do_map fixed work: vfio_dma lookup, allocation, tree link' },
  { key: 'vfioPinPagePerPageNs', unit: 'ns', min: 0, max: 100_000, description: 'pin_user_pages_remote (long-term) of one page' },
  { key: 'vfioLockedVmAccountNs', unit: 'ns', min: 0, max: 1_000_000, description: 'mmap lock for write + locked_vm update, once per MAP_DMA / UNMAP_DMA' },
  { key: 'hostIommuMapPerPageNs', unit: 'ns', min: 0, max: 100_000, description: 'VT-d PTE write + cache flush, per page' },
  { key: 'vfioDmaDoUnmapBaseNs', unit: 'ns', min: 0, max: 1_000_000, description: 'vfio_dma_do_unmap fixed work: lookup, unlink, free' },
  { key: 'hostIommuUnmapPerPageNs', unit: 'ns', min: 0, max: 100_000, description: 'VT-d PTE clear + cache flush, per page' },
  {
    key: 'hostIotlbFlushNs',
    unit: 'ns',
    min: 0,
    max: 1_000_000,
    description: 'one VT-d IOTLB invalidation through the invalidation queue, waiting for completion',
  },
  { key: 'vfioUnpinPagePerPageNs', unit: 'ns', min: 0, max: 100_000, description: 'unpin (and dirty) one page' },
  // Bare metal: the kernel on the host drives the IOMMU itself (its VT-d work costs the host keys above)
  {
    key: 'iommuDmaMapCallBareMetalNs',
    unit: 'ns',
    min: 0,
    max: 50_000,
    description: 'dma-iommu bookkeeping per iommu_dma_map_page/_sg or unmap call on bare metal (no virtio-iommu mapping tree)',
  },
  // The host machine
  {
    key: 'llcBytes',
    unit: 'bytes',
    min: 65_536,
    max: 1 << 30,
    description: 'last-level cache size: what the CPU touched most recently and still fits is cached',
  },
  {
    key: 'ddioLlcBytes',
    unit: 'bytes',
    min: 0,
    max: 1 << 30,
    description: 'share of the last-level cache a device write may allocate into (Intel DDIO ways); 0: no DDIO, device writes go to DRAM',
  },
  { key: 'hostCpuThreadsCount', unit: 'count', min: 1, max: 4096, description: 'hardware threads of the host CPU: the logical CPUs top and vmstat count' },
  // NVMe device (a named drive) and its link
  { key: 'nvmeDoorbellLatencyNs', unit: 'ns', min: 0, max: 100_000, description: 'posted MMIO doorbell write reaching the device' },
  { key: 'nvmeSqeFetchNs', unit: 'ns', min: 0, max: 100_000, description: 'device DMA read of one 64 B SQE (round trip)' },
  { key: 'nvmeReadLatencyNs', unit: 'ns', min: 0, max: 100_000_000, description: 'media + controller latency of a read at QD1, excluding data transfer' },
  { key: 'nvmeWriteLatencyNs', unit: 'ns', min: 0, max: 100_000_000, description: 'media + controller latency of a write at QD1, excluding data transfer' },
  { key: 'nvmeMediaReadBytesPerNs', unit: 'bytes/ns', min: 0.001, max: 100, description: 'sustained sequential media read bandwidth' },
  { key: 'nvmeMediaWriteBytesPerNs', unit: 'bytes/ns', min: 0.001, max: 100, description: 'sustained sequential media write bandwidth' },
  { key: 'nvmeChannelsCount', unit: 'count', min: 1, max: 1024, description: 'parallel media units serving commands at once' },
  { key: 'nvmeControllerCommandNs', unit: 'ns', min: 0, max: 10_000_000, description: 'controller occupancy per command (1 / max IOPS)' },
  { key: 'pcieLinkBytesPerNs', unit: 'bytes/ns', min: 0.01, max: 200, description: 'usable PCIe link bandwidth for data TLPs, one direction' },
  { key: 'iotlbEntriesCount', unit: 'count', min: 1, max: 65_536, description: 'host IOMMU IOTLB entries (4 KiB translations)' },
  { key: 'iotlbMissWalkNs', unit: 'ns', min: 0, max: 100_000, description: 'added DMA latency of an IOTLB miss (page walk)' },
  { key: 'msiLatencyNs', unit: 'ns', min: 0, max: 100_000, description: 'device MSI write until the interrupt is pending for the guest' },
  { key: 'nvmeCqePostNs', unit: 'ns', min: 0, max: 100_000, description: 'device posted write of one 16 B CQE reaching host memory' },
  // Kernel time constants
  { key: 'lazyFlushTimeoutNs', unit: 'ns', min: 1_000, max: 10 * NS_PER_S, description: 'lazy flush queue timeout (IOVA_FQ_TIMEOUT)' },
  { key: 'lazyFlushQueueEntriesCount', unit: 'count', min: 1, max: 1_048_576, description: 'entries per per-CPU flush queue (IOVA_FQ_SIZE)' },
  { key: 'bounceEvictionPeriodNs', unit: 'ns', min: NS_PER_MS, max: 3_600 * NS_PER_S, description: 'bounce pool eviction period (EVICT_PERIOD_MSEC)' },
] as const satisfies readonly ProfileKeySpec[];

export type CostKey = (typeof PROFILE_KEYS)[number]['key'];

/** Every cost, flattened to a number. */
export type CostValues = { readonly [K in CostKey]: number };

export interface CostProfile extends CostValues {
  readonly name: string;
  readonly description: string;
  /** where each value comes from (the `source` text of the file) */
  readonly sources: Readonly<Record<CostKey, string>>;
}

const SPEC_BY_KEY: ReadonlyMap<string, ProfileKeySpec<CostKey>> = new Map(PROFILE_KEYS.map((spec) => [spec.key, spec]));

const TOP_LEVEL_KEYS = ['name', 'description', 'values'] as const;
const ENTRY_KEYS = ['value', 'source'] as const;

/**
 * Absolute path of the shipped default profile. The compiled module lives at
 * packages/shm/dist/src/profile.js (run from source, packages/shm/src).
 */
export const DEFAULT_PROFILE_PATH: string = defaultProfilePath();

function defaultProfilePath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const inDist = here.endsWith(`${sep}dist${sep}src`);
  const packageRoot = resolve(here, inDist ? '../..' : '..');
  return resolve(packageRoot, '../../profiles/i5-10210U.json');
}

/**
 * Checks a parsed profile and returns it flattened and frozen.
 * @param raw    the parsed JSON
 * @param origin where it came from (a path), quoted in error messages
 * @throws InputError naming the field (`profile.<key>`), the value and what is allowed
 */
export function validateProfile(raw: unknown, origin: string): CostProfile {
  const where = `(profile ${origin})`;
  if (!isPlainObject(raw)) {
    throw new InputError('profile', raw, `a JSON object with "name", "description" and "values" ${where}`);
  }
  for (const key of Object.keys(raw)) {
    if (!(TOP_LEVEL_KEYS as readonly string[]).includes(key)) {
      throw new InputError(`profile.${inputExcerpt(key)}`, raw[key], `not a top-level field; allowed: ${TOP_LEVEL_KEYS.join(', ')} ${where}`);
    }
  }
  const { name, description, values } = raw;
  if (typeof name !== 'string' || name.trim() === '') {
    throw new InputError('profile.name', name, `a non-empty string ${where}`);
  }
  if (typeof description !== 'string') {
    throw new InputError('profile.description', description, `a string ${where}`);
  }
  if (!isPlainObject(values)) {
    throw new InputError('profile.values', values, `an object mapping each cost key to {"value": <number>, "source": "<text>"} ${where}`);
  }
  for (const key of Object.keys(values)) {
    if (!SPEC_BY_KEY.has(key)) {
      const near = closestKey(key);
      const hint = near === undefined ? 'see profiles/README.md for the keys' : `did you mean "${near}"?`;
      throw new InputError(`profile.${inputExcerpt(key)}`, values[key], `not a known cost key; ${hint} ${where}`);
    }
  }

  const flat: Record<string, number> = {};
  const sources: Record<string, string> = {};
  for (const spec of PROFILE_KEYS) {
    const field = `profile.${spec.key}`;
    const entry = values[spec.key];
    const shape = `{"value": ${describeAllowed(spec)}, "source": "<where the value comes from>"}`;
    if (entry === undefined) {
      throw new InputError(field, undefined, `required: ${shape} ${where}`);
    }
    if (!isPlainObject(entry)) {
      throw new InputError(field, entry, `${shape} ${where}`);
    }
    for (const k of Object.keys(entry)) {
      if (!(ENTRY_KEYS as readonly string[]).includes(k)) {
        throw new InputError(`${field}.${inputExcerpt(k)}`, entry[k], `not an entry field; allowed: ${ENTRY_KEYS.join(', ')} ${where}`);
      }
    }
    const value = entry.value;
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new InputError(`${field}.value`, value, `${describeAllowed(spec)} ${where}`);
    }
    if (value < spec.min || value > spec.max || (spec.unit !== 'bytes/ns' && !Number.isInteger(value))) {
      throw new InputError(`${field}.value`, value, `${describeAllowed(spec)} ${where}`);
    }
    const source = entry.source;
    if (typeof source !== 'string' || source.trim() === '') {
      throw new InputError(`${field}.source`, source, `a non-empty text naming where the value comes from (profiles/README.md) ${where}`);
    }
    flat[spec.key] = value;
    sources[spec.key] = source;
  }

  if (flat.ddioLlcBytes > flat.llcBytes) {
    throw new InputError(
      'profile.ddioLlcBytes.value',
      flat.ddioLlcBytes,
      `at most llcBytes (${flat.llcBytes}): DDIO uses ways of the last-level cache ${where}`,
    );
  }

  return Object.freeze({
    name,
    description,
    ...(flat as CostValues),
    sources: Object.freeze(sources as Record<CostKey, string>),
  });
}

/** Largest profile file read: the reference profile has under 20 KB. */
const MAX_PROFILE_FILE_BYTES = 16 * 1024 * 1024;

/**
 * Reads and validates a profile file.
 * @throws InputError naming the path for a missing/unreadable file or bad JSON,
 *   and the field for a malformed profile
 */
export function loadProfile(path: string): CostProfile {
  const absolute = isAbsolute(path) ? path : resolve(path);
  let text: string;
  try {
    // a FIFO would block the read until a writer came, a device may never end
    const st = statSync(absolute);
    if (st.isDirectory()) throw Object.assign(new Error('a directory'), { code: 'EISDIR' });
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: st.isFIFO() ? 'a FIFO' : 'a device or socket, not a regular file' });
    if (st.size > MAX_PROFILE_FILE_BYTES) throw Object.assign(new Error('too large'), { code: `at most ${MAX_PROFILE_FILE_BYTES} bytes; it has ${st.size}` });
    text = readFileSync(absolute, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'a directory, not a file' : (code ?? (err as Error).message);
    throw new InputError('profile', absolute, `a readable JSON profile file (${why})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InputError('profile', absolute, `valid JSON (${(err as Error).message})`);
  }
  return validateProfile(raw, absolute);
}

function describeAllowed(spec: ProfileKeySpec): string {
  switch (spec.unit) {
    case 'ns':
      return `an integer number of ns in [${spec.min}, ${spec.max}]`;
    case 'count':
      return `an integer count in [${spec.min}, ${spec.max}]`;
    case 'bytes/ns':
      return `a number of bytes/ns (= GB/s) in [${spec.min}, ${spec.max}]`;
    case 'bytes':
      return `an integer number of bytes in [${spec.min}, ${spec.max}]`;
  }
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** The known key within edit distance 3 of `key` (case-insensitive), if any. */
function closestKey(key: string): CostKey | undefined {
  return closestName(
    key.toLowerCase(),
    PROFILE_KEYS.map((spec) => spec.key),
    3,
    (a, b) => editDistance(a.toLowerCase(), b.toLowerCase()),
  );
}
