/**
 * Shared-memory regions with a written-down layout.
 *
 * A `Layout` is a list of named fields, each 8-byte aligned, so every field
 * can be viewed as Int32Array, Float64Array or bytes. `Region.allocate`
 * creates the SharedArrayBuffer; `Region.attach` joins one that another
 * thread created (it checks the size). `describeLayout` prints the
 * offset/size table that sits next to each layout's definition.
 */

import { allocateShared } from './shared-pool.js';

export type FieldKind = 'i32' | 'f64' | 'u8';

export interface FieldSpec {
  readonly name: string;
  readonly kind: FieldKind;
  /** number of elements of `kind` */
  readonly count: number;
}

export interface FieldPlacement {
  readonly name: string;
  readonly kind: FieldKind;
  readonly count: number;
  readonly offsetBytes: number;
  readonly sizeBytes: number;
}

export interface Layout {
  readonly name: string;
  readonly sizeBytes: number;
  readonly fields: Readonly<Record<string, FieldPlacement>>;
  readonly order: readonly FieldPlacement[];
}

const ELEMENT_BYTES: Record<FieldKind, number> = { i32: 4, f64: 8, u8: 1 };
/** fields that different threads write are kept a cache line apart */
export const CACHE_LINE_BYTES = 64;

export function defineLayout(name: string, fields: readonly FieldSpec[], alignBytes = 8): Layout {
  let offsetBytes = 0;
  const placed: Record<string, FieldPlacement> = {};
  const order: FieldPlacement[] = [];
  for (const f of fields) {
    if (!Number.isInteger(f.count) || f.count < 0) throw new RangeError(`layout ${name}: field ${f.name} has bad count ${f.count}`);
    if (placed[f.name]) throw new RangeError(`layout ${name}: duplicate field ${f.name}`);
    offsetBytes = alignUp(offsetBytes, alignBytes);
    const p: FieldPlacement = { name: f.name, kind: f.kind, count: f.count, offsetBytes, sizeBytes: f.count * ELEMENT_BYTES[f.kind] };
    placed[f.name] = p;
    order.push(p);
    offsetBytes += p.sizeBytes;
  }
  return { name, sizeBytes: alignUp(offsetBytes, alignBytes), fields: placed, order };
}

export function describeLayout(layout: Layout): string {
  const rows = layout.order.map((f) => `| ${f.offsetBytes} | ${f.sizeBytes} | ${f.name} | ${f.kind}[${f.count}] |`);
  return [`${layout.name} (${layout.sizeBytes} bytes)`, '| offset | size | field | type |', '|---|---|---|---|', ...rows].join('\n');
}

export function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

export class Region {
  private constructor(
    readonly layout: Layout,
    readonly sab: SharedArrayBuffer,
    readonly baseOffsetBytes: number,
  ) {}

  /** Create a new zeroed region (the creator's side). */
  static allocate(layout: Layout): Region {
    return new Region(layout, allocateShared(layout.sizeBytes), 0);
  }

  /** Join a region created elsewhere (another thread's side). */
  static attach(layout: Layout, sab: SharedArrayBuffer, baseOffsetBytes = 0): Region {
    if (baseOffsetBytes % 8 !== 0) throw new RangeError(`region ${layout.name}: base offset ${baseOffsetBytes} not 8-byte aligned`);
    if (sab.byteLength < baseOffsetBytes + layout.sizeBytes) {
      throw new RangeError(
        `region ${layout.name}: buffer of ${sab.byteLength} bytes is smaller than the layout (${layout.sizeBytes} bytes at ${baseOffsetBytes})`,
      );
    }
    return new Region(layout, sab, baseOffsetBytes);
  }

  private field(name: string, kind: FieldKind): FieldPlacement {
    const f = this.layout.fields[name];
    if (!f) throw new RangeError(`region ${this.layout.name}: no field ${name}`);
    if (f.kind !== kind) throw new TypeError(`region ${this.layout.name}: field ${name} is ${f.kind}, not ${kind}`);
    return f;
  }

  /** A view bounded to the field: an index outside it reads undefined and writes nothing. */
  i32(name: string): Int32Array {
    const f = this.field(name, 'i32');
    return new Int32Array(this.sab, this.baseOffsetBytes + f.offsetBytes, f.count);
  }

  f64(name: string): Float64Array {
    const f = this.field(name, 'f64');
    return new Float64Array(this.sab, this.baseOffsetBytes + f.offsetBytes, f.count);
  }

  u8(name: string): Uint8Array {
    const f = this.field(name, 'u8');
    return new Uint8Array(this.sab, this.baseOffsetBytes + f.offsetBytes, f.count);
  }

  offsetOf(name: string): number {
    const f = this.layout.fields[name];
    if (!f) throw new RangeError(`region ${this.layout.name}: no field ${name}`);
    return this.baseOffsetBytes + f.offsetBytes;
  }
}
