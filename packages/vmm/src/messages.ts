/**
 * The VMM worker's protocol with the guest. The virtio-iommu requests
 * themselves live in guest RAM (a split virtqueue, see shm/wire); these
 * records are the kick (the guest's notify write, a VM exit) and the used
 * notification the busy-polling guest waits for.
 *
 * | type | name | direction | payload (offset from 16: field) |
 * |------|------|-----------|---------------------------------|
 * | 0x201 | GuestToVmmKick | vCPU → vmm | 0: vcpu i32, 4: queue i32 (0 = request queue) |
 * | 0x202 | VmmToGuestUsed | vmm → vCPU | 0: usedIdx i32, 4: requests i32 (handled for this kick) |
 * | 0x203 | GuestToVmmDone | vCPU → vmm | (none) the vCPU will send nothing more |
 */

export const GuestToVmmKick = 0x201;
export const VmmToGuestUsed = 0x202;
export const GuestToVmmDone = 0x203;

export const KickPayload = { vcpu: 0, queue: 4 } as const;
export const UsedPayload = { usedIdx: 0, requests: 4 } as const;
