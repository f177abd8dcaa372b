/**
 * The host-vfio worker's protocol: the VFIO container ioctls the VMM makes
 * (VFIO_IOMMU_MAP_DMA / VFIO_IOMMU_UNMAP_DMA) and their replies. Requests and
 * replies pair by request id (shm RpcClient / RpcServer).
 *
 * | type | name | direction | payload (offset from 16: field) |
 * |------|------|-----------|---------------------------------|
 * | 0x301 | VmmToHostMapDma   | vmm → host | 0: iova f64, 8: vaddr f64, 16: sizeBytes f64, 24: flags i32 (1 READ, 2 WRITE) |
 * | 0x302 | VmmToHostUnmapDma | vmm → host | 0: iova f64, 8: sizeBytes f64 |
 * | 0x303 | HostToVmmReply    | host → vmm | 0: errno i32 (0 or negative), 8: unmappedBytes f64 |
 * | 0x304 | VmmToHostDone     | vmm → host | (none) stop serving |
 * | 0x103 | HostToDeviceIotlbInval | host → device | 0: iova f64, 8: sizeBytes f64 (0 = everything): applied by the device in host-time order |
 * Timestamps: the request carries the VMM's model time at the ioctl; the
 * reply the host's model time when the ioctl returns.
 */

export const VmmToHostMapDma = 0x301;
export const VmmToHostUnmapDma = 0x302;
export const HostToVmmReply = 0x303;
export const VmmToHostDone = 0x304;
export const HostToDeviceIotlbInval = 0x103;

export const VFIO_DMA_MAP_FLAG_READ = 1;
export const VFIO_DMA_MAP_FLAG_WRITE = 2;

export const MapDmaPayload = { iova: 0, vaddr: 8, sizeBytes: 16, flags: 24 } as const;
export const UnmapDmaPayload = { iova: 0, sizeBytes: 8 } as const;
export const ReplyPayload = { errno: 0, unmappedBytes: 8 } as const;
export const IotlbInvalPayload = { iova: 0, sizeBytes: 8 } as const;

/** The VFIO type1 ioctls as a port: called directly in one thread, or through the rings. */
export interface VfioContainerPort {
  mapDma(args: { iova: number; vaddr: number; sizeBytes: number; read: boolean; write: boolean }, nowNs: number): { errno: number; doneNs: number };
  unmapDma(args: { iova: number; sizeBytes: number }, nowNs: number): { errno: number; unmappedBytes: number; doneNs: number };
}
