/** The container costs the host-vfio tests charge: round numbers, so expected model times read easily. */

import type { VfioContainerCosts } from '../../src/vfio-iommu-type1.js';

export const TEST_COSTS: VfioContainerCosts = {
  vfioDmaDoMapBaseNs: 1000,
  vfioPinPagePerPageNs: 100,
  vfioLockedVmAccountNs: 500,
  hostIommuMapPerPageNs: 10,
  vfioDmaDoUnmapBaseNs: 2000,
  hostIommuUnmapPerPageNs: 20,
  hostIotlbFlushNs: 700,
  vfioUnpinPagePerPageNs: 50,
};
