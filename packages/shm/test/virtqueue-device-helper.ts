/**
 * Worker entry for wire-virtqueue.test: a VirtqueueDevice on its own thread.
 * For each chain it hashes (FNV-1a) every device-readable byte in chain
 * order and fills the device-writable segments with the hash (u32 LE) then
 * bytes (hash + k) & 0xff, returning the chain with the whole writable
 * length. Doorbells: word 0 = kick (driver → device), word 1 = interrupt
 * (device → driver); each a counter bumped then notified.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { attachGuestMemory, VirtqueueDevice, VirtqueueError, virtqueueLayout } from '../src/wire/virtqueue.js';

export interface DeviceHelperData {
  ram: SharedArrayBuffer;
  bells: SharedArrayBuffer;
  queueSizeEntries: number;
  baseGpa: number;
  totalChains: number;
}

const KICK = 0;
const IRQ = 1;

function run(data: DeviceHelperData): { handled: number; parks: number } {
  const mem = attachGuestMemory(data.ram);
  const bells = new Int32Array(data.bells);
  const dev = new VirtqueueDevice(mem, virtqueueLayout(data.queueSizeEntries, data.baseGpa));
  let handled = 0;
  let parks = 0;
  const deadline = Date.now() + 60_000;
  while (handled < data.totalChains) {
    const seen = Atomics.load(bells, KICK);
    let n = 0;
    for (let chain = dev.popAvail(); chain !== null; chain = dev.popAvail()) {
      let h = 0x811c9dc5;
      for (const s of chain.out) for (let i = s.gpa; i < s.gpa + s.lenBytes; i++) h = Math.imul(h ^ mem.u8[i], 0x01000193) >>> 0;
      let k = 0;
      let written = 0;
      for (const s of chain.in) {
        for (let i = s.gpa; i < s.gpa + s.lenBytes; i++, k++) mem.u8[i] = k < 4 ? (h >>> (8 * k)) & 0xff : (h + k) & 0xff;
        written += s.lenBytes;
      }
      dev.pushUsed(chain.head, written);
      n++;
    }
    handled += n;
    if (n > 0) {
      Atomics.add(bells, IRQ, 1);
      Atomics.notify(bells, IRQ);
    } else {
      if (Date.now() > deadline) throw new Error(`device helper: stalled after ${handled} chains`);
      parks++;
      Atomics.wait(bells, KICK, seen, 1000);
    }
  }
  return { handled, parks };
}

try {
  parentPort!.postMessage({ ok: true, ...run(workerData as DeviceHelperData) });
} catch (e) {
  parentPort!.postMessage({ ok: false, error: e instanceof VirtqueueError ? `${e.kind}: ${e.message}` : String(e) });
}
