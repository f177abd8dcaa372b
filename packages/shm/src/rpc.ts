/**
 * Ports: how a component calls another. A port is an interface (e.g. the
 * VFIO ioctls the VMM calls); it has two transports:
 * - in-thread: the caller holds the callee object and calls it directly;
 * - worker: `RpcClient` encodes the call as a fixed-size record in a request
 *   ring, waits (spin, then park) for the reply record naming the same
 *   request id in a reply ring, and decodes it; `RpcServer` on the callee's
 *   worker decodes, calls the same callee object, and encodes the reply.
 * Both transports run the callee's code unchanged, so package tests and
 * benchmarks can compare them directly.
 */

import { type AbortFlag, RunAborted } from './event.js';
import { RECORD, Ring, type RingHandle } from './ring.js';

export interface RpcChannelHandles {
  readonly request: RingHandle;
  readonly reply: RingHandle;
}

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export class RpcClient {
  readonly request: Ring;
  readonly reply: Ring;
  private nextId = 1;
  calls = 0;

  constructor(
    handles: RpcChannelHandles,
    private readonly abort: AbortFlag,
    private readonly spinLoads: number,
  ) {
    this.request = Ring.attach(handles.request);
    this.reply = Ring.attach(handles.reply);
  }

  /**
   * Send one request and wait for its reply. `write(dv, payloadOffset)` fills
   * the request payload; `read(dv, payloadOffset, timestampNs)` decodes the
   * reply. Returns what `read` returns.
   */
  call<T>(
    type: number,
    timestampNs: number,
    write: (dv: DataView, off: number) => void,
    read: (dv: DataView, off: number, replyTimestampNs: number, replyType: number) => T,
  ): T {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) | 0 || 1;
    const req = this.request;
    const off = req.reserve(this.spinLoads, this.abort);
    req.writeHeader(off, type, id, timestampNs);
    write(req.dv, off + RECORD.payloadOffset);
    req.publish();
    this.calls++;
    const rep = this.reply;
    rep.waitForData(this.spinLoads, this.abort);
    const roff = rep.offsetAt(0);
    const rid = rep.requestIdAt(roff);
    if (rid !== id) throw new ProtocolError(`reply names request ${rid}, expected ${id}`);
    const result = read(rep.dv, roff + RECORD.payloadOffset, rep.timestampAt(roff), rep.typeAt(roff));
    rep.release(1);
    return result;
  }
}

export interface RpcRequestView {
  readonly type: number;
  readonly requestId: number;
  readonly timestampNs: number;
  readonly dv: DataView;
  readonly payloadOffset: number;
}

export class RpcServer {
  readonly request: Ring;
  readonly reply: Ring;

  constructor(handles: RpcChannelHandles) {
    this.request = Ring.attach(handles.request);
    this.reply = Ring.attach(handles.reply);
  }

  /**
   * Serve every request available now. `handle` decodes the request and
   * returns a function that writes the reply payload, plus the reply's type
   * and timestamp. Returns the number served.
   */
  serveAvailable(
    handle: (req: RpcRequestView) => { type: number; timestampNs: number; write: (dv: DataView, off: number) => void },
    abort: AbortFlag,
    spinLoads: number,
  ): number {
    const n = this.request.available();
    for (let i = 0; i < n; i++) {
      const off = this.request.offsetAt(i);
      const view: RpcRequestView = {
        type: this.request.typeAt(off),
        requestId: this.request.requestIdAt(off),
        timestampNs: this.request.timestampAt(off),
        dv: this.request.dv,
        payloadOffset: off + RECORD.payloadOffset,
      };
      const rep = handle(view);
      const roff = this.reply.reserve(spinLoads, abort);
      if (abort.aborted()) throw new RunAborted('serving a request');
      this.reply.writeHeader(roff, rep.type, view.requestId, rep.timestampNs);
      rep.write(this.reply.dv, roff + RECORD.payloadOffset);
      this.reply.publish();
    }
    this.request.release(n);
    return n;
  }
}

export function allocateRpcChannel(
  capacityRecords: number,
  serverEvent?: { sab: SharedArrayBuffer; index: number },
  clientEvent?: { sab: SharedArrayBuffer; index: number },
): RpcChannelHandles {
  return { request: Ring.allocate({ capacityRecords }, serverEvent), reply: Ring.allocate({ capacityRecords }, clientEvent) };
}
