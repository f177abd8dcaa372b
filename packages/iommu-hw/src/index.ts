/**
 * The host IOMMU as hardware: the page-table format the host's driver
 * writes and the device-side walker reads (io-pgtable.ts), and the IOTLB
 * that caches the walks in front of the device's DMAs (iotlb.ts), and the
 * record of its translation faults the host reads (fault-log.ts).
 */

export * from './context-entry.js';
export * from './fault-log.js';
export * from './io-pgtable.js';
export * from './iotlb.js';
export * from './lru-index.js';
export * from './pgtable-journal.js';
