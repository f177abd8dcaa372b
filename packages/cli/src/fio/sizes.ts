/**
 * fio's number syntax for sizes, counts and times (fio HOWTO "Parameter
 * types"; parse.c `str_to_decimal`, `__get_mult_bytes`, `get_mult_time`).
 *
 * Sizes, with the default kb_base=1024 ("compatibility mode"):
 *   k/kb m/mb g/gb t/tb p/pb  → powers of 1024   (4k = 4096)
 *   kib mib gib tib pib       → powers of 1000   (4kib = 4000: fio inverts IEC/SI here)
 * With kb_base=1000 the two rows swap. Suffixes are case-insensitive; a
 * trailing b/B means bytes; 0x… is hexadecimal (no suffix).
 * Times: a bare number is seconds; d, h, m (minutes), s/sec, ms/msec, us/usec.
 *
 * Stricter than fio where fio silently misreads: decimals ("1.5m" is 1 byte
 * in fio), spaces ("4 k" is 4 bytes), unknown suffixes, and the ambiguous
 * ki/mi/gi/ti/pi (without b) are errors here, not guesses.
 */
import { InputError } from '@vmstack/shm';

export type KbBase = 1024 | 1000;

const SIZE_POWER: Record<string, number> = { k: 1, m: 2, g: 3, t: 4, p: 5 };

const SIZE_ALLOWED =
  'a whole number of bytes with an optional suffix: k, m, g, t, p (powers of 1024, e.g. 4k, 64m)' +
  " or kib, mib, gib (powers of 1000 in fio's default kb_base=1024)";

/**
 * Parses a fio size ("4k", "64m", "1g", "4096", "0x1000") into bytes.
 * @param field the option as the user wrote it, for errors (e.g. "[global] bs")
 */
export function parseSizeBytes(field: string, text: string, kbBase: KbBase = 1024): number {
  const t = text.trim();
  if (t.endsWith('%')) {
    throw new InputError(field, text, `${SIZE_ALLOWED}; percentages of the device are not modelled`);
  }
  const hex = /^0x([0-9a-f]+)$/i.exec(t);
  if (hex) return checkedBytes(field, text, parseInt(hex[1], 16));
  const m = /^(\d+)([a-z]*)$/i.exec(t);
  if (!m) throw new InputError(field, text, SIZE_ALLOWED);
  let suffix = m[2].toLowerCase();
  if (suffix === 'b') suffix = '';
  let multiplier = 1;
  if (suffix !== '') {
    const iec = /^([kmgtp])ib$/.exec(suffix); // fio: "the opposite" base of kb_base
    const si = /^([kmgtp])b?$/.exec(suffix);
    if (iec) multiplier = (kbBase === 1024 ? 1000 : 1024) ** SIZE_POWER[iec[1]];
    else if (si) multiplier = kbBase ** SIZE_POWER[si[1]];
    else throw new InputError(field, text, SIZE_ALLOWED);
  }
  return checkedBytes(field, text, Number(m[1]) * multiplier);
}

function checkedBytes(field: string, text: string, bytes: number): number {
  if (!Number.isSafeInteger(bytes)) {
    throw new InputError(field, text, `${SIZE_ALLOWED}; at most ${Number.MAX_SAFE_INTEGER} bytes`);
  }
  return bytes;
}

/** Parses a whole number: decimal or 0x hexadecimal, no suffix (counts, percentages, seeds). */
export function parseCount(field: string, text: string, allowed: string): number {
  const t = text.trim();
  const value = /^\d+$/.test(t) ? Number(t) : /^0x[0-9a-f]+$/i.test(t) ? parseInt(t.slice(2), 16) : NaN;
  if (!Number.isSafeInteger(value)) throw new InputError(field, text, allowed);
  return value;
}

const NS_PER_UNIT: Record<string, number> = {
  us: 1e3,
  usec: 1e3,
  ms: 1e6,
  msec: 1e6,
  s: 1e9,
  sec: 1e9,
  m: 60e9,
  h: 3600e9,
  d: 86400e9,
};

const TIME_ALLOWED = 'a whole number with an optional unit: us, ms, s, m (minutes), h, d; a bare number is seconds (e.g. 10, 10s, 500ms)';

/** Parses a fio time ("10", "10s", "500ms", "2m") into model nanoseconds; a bare number is seconds. */
export function parseTimeNs(field: string, text: string, defaultUnit: 's' | 'us' = 's'): number {
  const m = /^(\d+)([a-z]*)$/i.exec(text.trim());
  const nsPerUnit = m ? NS_PER_UNIT[m[2] === '' ? defaultUnit : m[2].toLowerCase()] : undefined;
  if (!m || nsPerUnit === undefined) throw new InputError(field, text, TIME_ALLOWED);
  const ns = Number(m[1]) * nsPerUnit;
  if (!Number.isSafeInteger(ns)) throw new InputError(field, text, `${TIME_ALLOWED}; at most ~104 days`);
  return ns;
}

/**
 * The modelled drive's capacity: the reference profile's Samsung PM981a 512 GB
 * (profiles/i5-10210U.json), formatted with 4 KiB logical blocks. A 512 GB
 * drive has 1,000,215,216 sectors of 512 bytes (IDEMA LBA1-03:
 * 97,696,368 + 1,953,504 × (512 − 50)), i.e. 125,026,902 blocks of 4 KiB.
 * runStack gives the device a namespace just large enough for the jobs'
 * regions; a region must lie within the capacity of the drive it models.
 */
export const DRIVE_CAPACITY_BYTES = 125_026_902 * 4096;

const CAPACITY_TEXT = `${DRIVE_CAPACITY_BYTES} bytes, the modelled drive's capacity (Samsung PM981a 512 GB, 125026902 blocks of 4 KiB)`;

/** Where a job's region is written: each part as the user wrote it, for errors. */
export interface RegionWritten {
  size: { field: string; value: string };
  offset?: { field: string; value: string };
  /** offset_increment, when numjobs clones start past the first offset */
  offsetIncrement?: { field: string; value: string };
}

/**
 * A job's region [offset, end) on the drive, for its last clone: it must lie
 * within the modelled drive's capacity, and a job that writes must fit in the
 * host's RAM, where the device keeps every block written. The error names the
 * option that puts the region past the drive: the offset (or offset_increment)
 * when the region starts beyond it, else the size.
 */
export function checkRegionBytes(
  written: RegionWritten,
  offsetBytes: number,
  lastOffsetBytes: number,
  sizeBytes: number,
  writes: boolean,
  hostRamBytes: number,
): void {
  const endBytes = lastOffsetBytes + sizeBytes;
  if (written.offset && offsetBytes >= DRIVE_CAPACITY_BYTES) {
    throw new InputError(written.offset.field, written.offset.value, `an offset below ${CAPACITY_TEXT}`);
  }
  if (written.offsetIncrement && lastOffsetBytes >= DRIVE_CAPACITY_BYTES) {
    throw new InputError(written.offsetIncrement.field, written.offsetIncrement.value, `an increment that starts every numjobs clone below ${CAPACITY_TEXT}`);
  }
  if (endBytes > DRIVE_CAPACITY_BYTES) {
    throw new InputError(written.size.field, written.size.value, `a region ending within the drive: at most ${CAPACITY_TEXT}, offset included`);
  }
  if (writes && endBytes > hostRamBytes) {
    throw new InputError(
      written.size.field,
      written.size.value,
      `for a job that writes, at most the host's RAM (${Math.floor(hostRamBytes / 2 ** 20)}m): the modelled drive keeps every block written in memory`,
    );
  }
}

/** A size option of compare or sweep (bytes read per run): a fio size whose region fits the modelled drive. */
export function parseRegionSizeBytes(field: string, text: string): number {
  const bytes = parseSizeBytes(field, text);
  checkRegionBytes({ size: { field, value: text } }, 0, 0, bytes, false, Number.POSITIVE_INFINITY);
  return bytes;
}
