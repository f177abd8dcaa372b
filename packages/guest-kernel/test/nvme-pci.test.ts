import { asGpa, asIova, attachGuestMemory, type Iova, NVME_CMD_READ, NVME_CMD_WRITE, nvmeSetupPrps, writeRwSqe } from '@vmstack/shm';
import test from 'ava';
import { newQueuePair, nvme_queue_rw } from '../src/nvme/nvme-pci.js';

const PAGE = 4096;

/** The SQE nvme_queue_rw should write: nvme_setup_rw with the PRPs of nvmeSetupPrps. */
function expectedSqe(pages: Iova[], bytes: number, listPage: { gpa: number; dmaAddr: number }, isRead: boolean, cid: number, slba: number): number[] {
  const mem = attachGuestMemory(new SharedArrayBuffer(64 * 1024));
  const prps = nvmeSetupPrps(mem, pages, 0, bytes, () => listPage);
  writeRwSqe(mem, 0, {
    opcode: isRead ? NVME_CMD_READ : NVME_CMD_WRITE,
    commandId: cid,
    nsid: 1,
    slba,
    blockCount: bytes / PAGE,
    prp1: prps.prp1,
    prp2: prps.prp2,
  });
  return [...mem.u8.subarray(0, 64)];
}

test('nvme_queue_rw: the SQE at the tail, with the PRPs nvmeSetupPrps gives, for one, two and three pages', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(64 * 1024));
  const q = newQueuePair(1, 8 * PAGE, 9 * PAGE, 4);
  const listPage = { gpa: asGpa(12 * PAGE), dmaAddr: asIova(0x7000_0000) };
  const pages = [asIova(0x10_0000), asIova(0x20_0000), asIova(0x30_0000)];
  for (const [k, bytes] of [PAGE, 2 * PAGE, 3 * PAGE].entries()) {
    const tail = nvme_queue_rw(mem, q, k !== 1, 10 + k, 100 * k, bytes, pages, listPage);
    t.is(tail, k + 1);
    const gpa = 8 * PAGE + k * 64;
    t.deepEqual([...mem.u8.subarray(gpa, gpa + 64)], expectedSqe(pages, bytes, listPage, k !== 1, 10 + k, 100 * k), `${bytes} bytes`);
  }
  // the three-page transfer's list holds the second and third page
  t.is(mem.dv.getUint32(12 * PAGE, true), 0x20_0000);
  t.is(mem.dv.getUint32(12 * PAGE + 8, true), 0x30_0000);
});

test('nvme_queue_rw: pages that are not 4 KiB aligned, or too few, are refused as nvmeSetupPrps refuses them', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(64 * 1024));
  const q = newQueuePair(1, 8 * PAGE, 9 * PAGE, 4);
  const listPage = { gpa: asGpa(12 * PAGE), dmaAddr: asIova(0x7000_0000) };
  t.throws(() => nvme_queue_rw(mem, q, true, 1, 0, PAGE, [asIova(0x10_0200)], listPage), { message: /not 4 KiB aligned/ });
  t.throws(() => nvme_queue_rw(mem, q, true, 1, 0, 2 * PAGE, [asIova(0x10_0000)], listPage), { message: /span 2 pages, 1 given/ });
  t.is(q.sqTail, 0, 'nothing queued');
});
