/**
 * The ring records between the workers: every encoder writes the header and
 * the payload its module's table names, and the decoders read back exactly
 * what was written, in a real ring record.
 */

import test from 'ava';
import {
  allocateRpcChannel,
  DeviceToGuestInterrupt,
  DOORBELL_CQ_HEAD,
  decodeMapDmaRequest,
  decodeUnmapDmaRequest,
  doorbellQid,
  doorbellValue,
  doorbellWhich,
  encodeDoorbell,
  encodeGuestToDeviceDone,
  encodeGuestToVmmDone,
  encodeInterrupt,
  encodeIotlbInval,
  encodeKick,
  encodeRegWrite,
  encodeUsed,
  encodeVfioReply,
  GuestToDeviceDone,
  GuestToDeviceDoorbell,
  GuestToDeviceRegWrite,
  GuestToVmmDone,
  GuestToVmmKick,
  HostToDeviceIotlbInval,
  HostToVmmReply,
  interruptCqeCount,
  iotlbInvalIova,
  iotlbInvalSizeBytes,
  NVME_REG_ASQ,
  Ring,
  RpcServer,
  regWriteReg,
  regWriteValue,
  usedRequests,
  type VfioMapDmaArgs,
  VfioRpcPort,
  type VfioUnmapDmaArgs,
  VmmToGuestUsed,
  VmmToHostMapDma,
  VmmToHostUnmapDma,
} from '../src/index.js';

function ring(): Ring {
  return Ring.attach(Ring.allocate({ capacityRecords: 4 }));
}

test('guest ↔ device: doorbell, register write, interrupt and done round-trip through a ring record', (t) => {
  const r = ring();
  let off = r.reserve(0);
  encodeDoorbell(r.dv, off, 1234.5, 3, DOORBELL_CQ_HEAD, 17);
  t.deepEqual([r.typeAt(off), r.requestIdAt(off), r.timestampAt(off)], [GuestToDeviceDoorbell, 0, 1234.5]);
  t.deepEqual([doorbellQid(r.dv, off), doorbellWhich(r.dv, off), doorbellValue(r.dv, off)], [3, DOORBELL_CQ_HEAD, 17]);
  off = r.reserve(0);
  encodeRegWrite(r.dv, off, 10, NVME_REG_ASQ, 0x1_2345_6000);
  t.deepEqual(
    [r.typeAt(off), regWriteReg(r.dv, off), regWriteValue(r.dv, off)],
    [GuestToDeviceRegWrite, NVME_REG_ASQ, 0x1_2345_6000],
    'a 64-bit register value survives',
  );
  off = r.reserve(0);
  encodeInterrupt(r.dv, off, 20, 2, 5, 1);
  t.deepEqual(
    [r.typeAt(off), r.requestIdAt(off), r.timestampAt(off), interruptCqeCount(r.dv, off)],
    [DeviceToGuestInterrupt, 2, 20, 1],
    'the request id names the CQ',
  );
  off = r.reserve(0);
  encodeGuestToDeviceDone(r.dv, off, 30);
  t.deepEqual([r.typeAt(off), r.timestampAt(off)], [GuestToDeviceDone, 30]);
});

test('guest ↔ vmm: kick, used (answering the kick by its request id) and done', (t) => {
  const r = ring();
  let off = r.reserve(0);
  encodeKick(r.dv, off, 7);
  t.deepEqual([r.typeAt(off), r.requestIdAt(off), r.timestampAt(off)], [GuestToVmmKick, 0, 7]);
  off = r.reserve(0);
  encodeUsed(r.dv, off, 9, 42, 3);
  t.deepEqual([r.typeAt(off), r.requestIdAt(off), r.timestampAt(off), usedRequests(r.dv, off)], [VmmToGuestUsed, 42, 9, 3]);
  off = r.reserve(0);
  encodeGuestToVmmDone(r.dv, off, 11);
  t.deepEqual([r.typeAt(off), r.timestampAt(off)], [GuestToVmmDone, 11]);
});

test('host → device: an IOTLB invalidation carries its range (0 bytes: everything)', (t) => {
  const r = ring();
  const off = r.reserve(0);
  encodeIotlbInval(r.dv, off, 55, 0x40_0000_0000, 0);
  t.deepEqual([r.typeAt(off), r.timestampAt(off), iotlbInvalIova(r.dv, off), iotlbInvalSizeBytes(r.dv, off)], [HostToDeviceIotlbInval, 55, 0x40_0000_0000, 0]);
});

test('vmm ↔ host: MAP_DMA and UNMAP_DMA through VfioRpcPort reach the server decoded, and the reply comes back', (t) => {
  const ch = allocateRpcChannel(4);
  const server = new RpcServer(ch);
  const port = new VfioRpcPort(ch, { aborted: () => false }, 0);
  const mapArgs: VfioMapDmaArgs = { iova: 0, vaddr: 0, sizeBytes: 0, read: false, write: false };
  const unmapArgs: VfioUnmapDmaArgs = { iova: 0, sizeBytes: 0 };
  const seen: unknown[] = [];
  // one thread: the server answers as soon as the client publishes its request, before the client waits for the reply
  const serve = () =>
    server.serveAvailable(
      (req) => {
        if (req.type === VmmToHostMapDma) seen.push({ ...decodeMapDmaRequest(req.dv, req.payloadOffset, mapArgs) });
        else if (req.type === VmmToHostUnmapDma) seen.push({ ...decodeUnmapDmaRequest(req.dv, req.payloadOffset, unmapArgs) });
        return {
          type: HostToVmmReply,
          timestampNs: req.timestampNs + 100,
          write: (dv, p) => encodeVfioReply(dv, p, req.type === VmmToHostMapDma ? -17 : 0, 8192),
        };
      },
      { aborted: () => false },
      0,
    );
  const publish = port.client.request.publish.bind(port.client.request);
  port.client.request.publish = () => {
    publish();
    serve();
  };
  t.deepEqual(port.mapDma({ iova: 0x10_0000, vaddr: 0x20_0000, sizeBytes: 12288, read: true, write: false }, 1000), { errno: -17, doneNs: 1100 });
  t.deepEqual(port.unmapDma({ iova: 0x10_0000, sizeBytes: 12288 }, 2000), { errno: 0, unmappedBytes: 8192, doneNs: 2100 });
  t.deepEqual(seen, [
    { iova: 0x10_0000, vaddr: 0x20_0000, sizeBytes: 12288, read: true, write: false },
    { iova: 0x10_0000, sizeBytes: 12288 },
  ]);
});
