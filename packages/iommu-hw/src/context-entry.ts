/**
 * The host IOMMU's context entry of one requester (its endpoint), as far as
 * the model needs it: present, the requester's DMA translates through its
 * container's page table; cleared, every DMA of the requester faults, as
 * VT-d faults a request whose context entry has its present bit clear (fault
 * reason 0x02). The host kernel clears it when the requester's VFIO group
 * leaves its container (VFIO_GROUP_UNSET_CONTAINER: the group is detached
 * from the container's IOMMU domain) and sets it when the group joins again,
 * then flushes the requester's IOTLB entries. One i32 in shared memory: the
 * host writes it, the device's IOTLB reads it on every translation.
 */

export class IommuContextEntry {
  private readonly word: Int32Array;

  /** A present context entry. */
  static allocate(alloc = (n: number) => new SharedArrayBuffer(n)): SharedArrayBuffer {
    const sab = alloc(4);
    new Int32Array(sab)[0] = 1;
    return sab;
  }

  constructor(sab: SharedArrayBuffer) {
    this.word = new Int32Array(sab, 0, 1);
  }

  get present(): boolean {
    return Atomics.load(this.word, 0) !== 0;
  }

  set(present: boolean): void {
    Atomics.store(this.word, 0, present ? 1 : 0);
  }
}
