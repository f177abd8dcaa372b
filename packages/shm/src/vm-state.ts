/**
 * The VM's run state, shared by the VMM and the vCPUs (a small SAB).
 *
 * | byte   | size | i32 index | field | writer |
 * |--------|------|-----------|-------|--------|
 * | 0      | 4    | VM_VMM_READY       | VMM threads ready (count): guest RAM set up; the vCPUs start once every one is | each vmm |
 * | 4      | 4    | VM_QUEUES_READY    | queues ready: vCPU 0 brought the NVMe controller up | vCPU 0 |
 * | 8      | 4    | VM_QUEUES_READY_NS | model ns at which the queues were ready (< 2^31) | vCPU 0 |
 * | 12     | 4    | VM_VCPUS_DONE      | vCPUs done with their jobs (count) | each vCPU |
 * | 16     | 4    | VM_BUFFER_TURN     | buffer turn: the vCPU whose turn it is to allocate its fio buffers | each vCPU, in order |
 * | 20     | 4    | VM_FREE_TURN       | free turn: the vCPU whose turn it is to free them at shutdown | each vCPU, in order |
 * | 24     | 4    | VM_FAULTS_REPORTED | VMM threads that have reported the host's faults at teardown (count); vCPU 0 then reads its event queues | each vmm |
 * | 28     | 4    | VM_FAULTS_DRAIN    | 1: a VMM thread found no event buffer left and asks vCPU 0 to read its event queues (which posts them again); 0: done | vmm sets, vCPU 0 clears |
 * | 32+8·v | 8    | —                  | vCPU v's model time when its job ended (f64, `vmEndTimes`) | vCPU v |
 *
 * Buffers are allocated one vCPU after another, in vCPU order, so the guest
 * pages every job gets — and everything that follows from them — do not
 * depend on which thread the OS ran first; they are freed the same way, so
 * the allocator's lock_stat does not either.
 */

export const VM_VMM_READY = 0;
export const VM_QUEUES_READY = 1;
export const VM_QUEUES_READY_NS = 2;
export const VM_VCPUS_DONE = 3;
export const VM_BUFFER_TURN = 4;
export const VM_FREE_TURN = 5;
export const VM_FAULTS_REPORTED = 6;
export const VM_FAULTS_DRAIN = 7;
const END_NS_OFFSET_BYTES = 32;

export function vmStateBytes(vcpus: number): number {
  return END_NS_OFFSET_BYTES + 8 * vcpus;
}

export function vmEndTimes(sab: SharedArrayBuffer): Float64Array {
  return new Float64Array(sab, END_NS_OFFSET_BYTES);
}

/**
 * The run's state across VMs (a small SAB shared by every vCPU of the run):
 *
 * | byte | size | i32 index | field | writer |
 * |------|------|-----------|-------|--------|
 * | 0    | 4    | RUN_VCPUS_DONE     | vCPUs of the whole run done with their jobs (count) | each vCPU |
 * | 4    | 4    | RUN_SHUTDOWN_TURN  | the VM whose turn it is to shut down | each VM's vCPU 0, in VM order |
 *
 * The VMs shut down one after another, in VM order, once every job of the
 * run is over: their shutdown unmaps go through host locks the VMs share
 * (`qi->q_lock`), and a fixed order keeps those locks' statistics
 * independent of thread scheduling, as the vCPU turns above do in one VM.
 */
export const RUN_VCPUS_DONE = 0;
export const RUN_SHUTDOWN_TURN = 1;
export const RUN_STATE_BYTES = 8;
