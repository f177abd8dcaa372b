/**
 * What fio's io_u.c decides for each I/O of a job: its direction
 * (`get_rw_ddir`: rwmixread for mixed jobs), its length (`get_next_buflen`:
 * bs per direction, bsrange, bssplit) and its offset (`get_next_offset`:
 * sequential, or random through the random map or a random distribution),
 * and when the job's I/O is done (`io_size` per loop, `loops`, `number_ios`).
 *
 * Offsets and lengths are in 4 KiB logical blocks within the job's region.
 * The random map and the distributions work in units of the job's smallest
 * block size, as fio's axmap and its zipf/pareto/gauss ranges do.
 *
 * The model's random numbers are not fio's (fio uses its tausworthe
 * generators): the same job draws other offsets than fio does, with the same
 * rules and distributions. Reads and writes of a sequential mixed job share
 * one position (fio keeps one per direction).
 */

import { BLOCK_BYTES, mulberry32Float } from '@vmstack/shm';
import type { BlockSizeSpec, FioJobSpec, RandomDistribution } from '../job-spec.js';
import { RandomMap } from './random-map.js';

export interface PatternIo {
  isRead: boolean;
  /** first logical block (absolute) and length in blocks */
  lba: number;
  blocks: number;
}

/** fio's hash.h `__hash_long` on 64 bits: multiplication by GOLDEN_RATIO_PRIME, modulo 2^64. */
const GOLDEN_RATIO_PRIME = 0x9e37fffffffc0001n;
const U64 = (1n << 64n) - 1n;
function hash_long(v: number): bigint {
  return (BigInt(v) * GOLDEN_RATIO_PRIME) & U64;
}

/** What the job engine takes its I/Os from: one file's pattern, or several files' in turn. */
export interface FioIoSource {
  /** The next I/O without taking it (the same one `next` returns), or null when the job's I/O is done. */
  peek(): PatternIo | null;
  /** The next I/O, or null when the job's I/O is done. */
  next(): PatternIo | null;
}

/**
 * The job's I/O source: its one file, or with `nrfiles` > 1 (fio's `filename=a:b`, `nrfiles=N`) its files in turn, as
 * fio's default file_service_type=roundrobin takes them: one I/O from each file, then the next. fio splits `size`
 * between the files and each file has its own offsets from `offset` (its own sequential position, random map and
 * draws); here file k is the k-th part of the job's region: [offset + k × size/N, offset + (k+1) × size/N).
 */
export function fioIoSource(job: FioJobSpec, rng: () => number): FioIoSource {
  const files = job.nrfiles ?? 1;
  if (files <= 1) return new FioIoPattern(job, rng);
  return new RoundRobinFiles(job, files, rng);
}

/** fio's file_service_type=roundrobin over `files` equal parts of the job's region. */
class RoundRobinFiles implements FioIoSource {
  private readonly files: FioIoPattern[];
  private cur = 0;
  private ios = 0;
  private peeked: PatternIo | null | undefined;

  constructor(
    private readonly job: FioJobSpec,
    count: number,
    rng: () => number,
  ) {
    const fileBytes = Math.floor(job.sizeBytes / count / BLOCK_BYTES) * BLOCK_BYTES;
    const ioSizeBytes = job.ioSizeBytes === null ? null : Math.floor(job.ioSizeBytes / count);
    this.files = Array.from(
      { length: count },
      (_, k) =>
        new FioIoPattern(
          {
            ...job,
            sizeBytes: fileBytes,
            offsetBytes: job.offsetBytes + k * fileBytes,
            ioSizeBytes,
            numberIos: 0,
            // each file its own draws (fio: per-file random maps and offsets); file 0 draws as a one-file job would
            randseed: (job.randseed + Math.imul(k, 0x632be5ab)) >>> 0,
          },
          rng,
        ),
    );
  }

  peek(): PatternIo | null {
    if (this.peeked === undefined) this.peeked = this.compute();
    return this.peeked;
  }

  next(): PatternIo | null {
    const io = this.peek();
    this.peeked = undefined;
    return io;
  }

  private compute(): PatternIo | null {
    if (this.job.numberIos > 0 && this.ios >= this.job.numberIos) return null;
    // the next file in turn that still has I/O; a file that is done is passed over, as fio closes it
    for (let tried = 0; tried < this.files.length; tried++) {
      const f = this.files[this.cur];
      this.cur = (this.cur + 1) % this.files.length;
      const io = f.next();
      if (io) {
        this.ios++;
        return io;
      }
    }
    return null;
  }
}

export class FioIoPattern implements FioIoSource {
  private readonly firstLba: number;
  private readonly regionBlocks: number;
  /** the random map's unit: the smallest block size of either direction, in blocks */
  private readonly unitBlocks: number;
  private readonly units: number;
  private readonly random: boolean;
  private readonly map: RandomMap | null;
  private readonly bsRng: () => number;
  private readonly distRng: () => number;
  private readonly offsetOf: (() => number) | null;
  /** sequential position, blocks into the region */
  private pos = 0;
  private loopBytes = 0;
  private loopsDone = 0;
  private ios = 0;
  private readonly loopLimitBytes: number;
  /** the I/O goes round the region within a loop (time_based, or io_size beyond size) */
  private readonly wraps: boolean;
  /** no I/O after the one `compute` returned */
  private done = false;

  constructor(
    private readonly job: FioJobSpec,
    /** the job's main generator: direction, then offset, one draw each (the order the model always used) */
    private readonly rng: () => number,
  ) {
    this.firstLba = job.offsetBytes / BLOCK_BYTES;
    this.regionBlocks = Math.floor(job.sizeBytes / BLOCK_BYTES);
    this.unitBlocks = Math.min(job.readBs.minBytes, job.writeBs.minBytes) / BLOCK_BYTES;
    this.units = Math.max(1, Math.floor(this.regionBlocks / this.unitBlocks));
    this.random = job.rw === 'randread' || job.rw === 'randwrite' || job.rw === 'randrw';
    const dist = job.randomDistribution;
    this.map = this.random && job.randomMap && dist.kind === 'random' ? new RandomMap(this.units) : null;
    const seed = (job.randseed + Math.imul(job.jobIndex, 0x9e3779b9)) >>> 0;
    this.bsRng = mulberry32Float((seed ^ 0x62737261) >>> 0);
    this.distRng = mulberry32Float((seed ^ 0x7a697066) >>> 0);
    this.offsetOf = this.random ? distributionOffset(dist, this.units, this.distRng) : null;
    this.loopLimitBytes = job.ioSizeBytes ?? job.sizeBytes;
    this.wraps = job.timeBased || this.loopLimitBytes > job.sizeBytes;
  }

  private peeked: PatternIo | null | undefined;
  /** the record `peek` and `next` return: one object, overwritten by the next I/O's */
  private readonly io: PatternIo = { isRead: true, lba: 0, blocks: 0 };

  /** The next I/O without taking it (the same record `next` returns, valid until the next I/O is computed), or null when the job's I/O is done. */
  peek(): PatternIo | null {
    if (this.peeked === undefined) this.peeked = this.compute();
    return this.peeked;
  }

  /** The next I/O, or null when the job's I/O is done (amount, loops, number_ios; time_based never). */
  next(): PatternIo | null {
    const io = this.peek();
    this.peeked = undefined;
    return io;
  }

  private compute(): PatternIo | null {
    if (this.done) return null;
    const job = this.job;
    const rw = job.rw;
    const isRead = rw === 'read' || rw === 'randread' ? true : rw === 'write' || rw === 'randwrite' ? false : this.rng() * 100 < job.rwmixreadPct;
    const bs = isRead ? job.readBs : job.writeBs;
    const want = this.buflenBlocks(bs);
    let start: number;
    let blocks: number;
    if (!this.random) {
      // not one I/O of this direction fits before the region's end: the pass is over (fio's io_u_fits)
      const minBlocks = bs.minBytes / BLOCK_BYTES;
      if (this.pos + minBlocks > this.regionBlocks) {
        if (!this.wraps && !this.endLoop()) return null;
        this.pos = 0;
      }
      start = this.pos;
      blocks = Math.min(want, this.regionBlocks - start);
      blocks -= blocks % minBlocks;
      this.pos += blocks;
    } else if (this.map) {
      const u = this.map.pick(this.rng);
      const units = this.map.markRun(u, Math.max(1, want / this.unitBlocks));
      start = u * this.unitBlocks;
      blocks = Math.min(units * this.unitBlocks, this.regionBlocks - start);
    } else {
      const u = this.offsetOf ? this.offsetOf() : Math.floor(this.rng() * this.units);
      start = u * this.unitBlocks;
      blocks = Math.min(want, this.regionBlocks - start);
    }
    this.ios++;
    this.loopBytes += blocks * BLOCK_BYTES;
    this.checkDone();
    const io = this.io;
    io.isRead = isRead;
    io.lba = this.firstLba + start;
    io.blocks = blocks;
    return io;
  }

  /** After an I/O: is the loop over (its amount done, or a pass over the region that does not wrap), and is the job? */
  private checkDone(): void {
    const job = this.job;
    if (job.numberIos > 0 && this.ios >= job.numberIos) {
      this.done = true;
      return;
    }
    if (job.timeBased) return;
    // a sequential pass is over when not one more unit fits before the region's end (fio's io_u_fits)
    const passOver = !this.wraps && (this.random ? this.map?.isFull === true : this.pos + this.unitBlocks > this.regionBlocks);
    if (this.loopBytes < this.loopLimitBytes && !passOver) return;
    this.endLoop();
  }

  /** A loop is over: the job is done after `loops` of them (false), else the next starts over (offsets from the start, a clear random map). */
  private endLoop(): boolean {
    this.loopsDone++;
    if (this.loopsDone >= this.job.loops) {
      this.done = true;
      return false;
    }
    this.loopBytes = 0;
    this.pos = 0;
    this.map?.reset();
    return true;
  }

  /** `get_next_buflen`: a fixed size, a draw from the range aligned down to its minimum, or a bssplit share. */
  private buflenBlocks(b: BlockSizeSpec): number {
    if (b.minBytes === b.maxBytes) return b.minBytes / BLOCK_BYTES;
    const r = this.bsRng();
    let bytes: number;
    if (b.split.length === 0) bytes = b.minBytes + Math.floor(b.maxBytes * r);
    else {
      bytes = b.split[b.split.length - 1].bytes;
      let cum = 0;
      for (const s of b.split) {
        cum += s.pct;
        if (r * 100 < cum) {
          bytes = s.bytes;
          break;
        }
      }
    }
    bytes -= bytes % b.minBytes;
    return Math.min(bytes, b.maxBytes) / BLOCK_BYTES;
  }
}

/**
 * A random offset (in units) by fio's distributions: `zipf_next`,
 * `pareto_next` (lib/zipf.c), `gauss_next` (lib/gauss.c), each hashed and
 * shifted by a random offset as fio does; zoned: a zone by its access share,
 * then uniform within it. Null for uniform (the caller's own draw).
 */
function distributionOffset(d: RandomDistribution, n: number, rng: () => number): (() => number) | null {
  const nn = BigInt(n);
  const randOff = BigInt(Math.floor(rng() * 2 ** 32));
  const hashed = (v: number): number => Number((hash_long(v) + randOff) % nn);
  switch (d.kind) {
    case 'random':
      return null;
    case 'zipf': {
      const theta = d.theta;
      let zetan = 0;
      for (let i = 0; i < n; i++) zetan += (1 / (i + 1)) ** theta;
      const zeta2 = 1 + 0.5 ** theta;
      const alpha = 1 / (1 - theta);
      const eta = (1 - (2 / n) ** (1 - theta)) / (1 - zeta2 / zetan);
      return () => {
        const u = rng();
        const z = u * zetan;
        const val = z < 1 ? 1 : z < 1 + 0.5 ** theta ? 2 : 1 + Math.floor(n * (eta * u - eta + 1) ** alpha);
        return hashed(val - 1);
      };
    }
    case 'pareto': {
      const pow = Math.log(d.h) / Math.log(1 - d.h);
      return () => hashed(Math.floor((n - 1) * rng() ** pow));
    }
    case 'normal': {
      const stddev = Math.min(Math.ceil((n * d.devPct) / 100), Math.floor(n / 2));
      return () => {
        let sum = 0;
        for (let i = 0; i < 12; i++) sum += Math.floor(rng() * (n + 1));
        sum = Math.floor((sum + 11) / 12);
        let dev = Math.floor(stddev * rng()) - Math.floor(stddev / 2);
        while (dev + sum >= n) dev = Math.trunc(dev / 2);
        return hashed(Math.max(0, sum + dev));
      };
    }
    case 'zoned': {
      const zones = d.zones;
      return () => {
        const v = 1 + Math.floor(rng() * 100);
        let acc = 0;
        let sizeStart = 0;
        for (const z of zones) {
          acc += z.accessPct;
          if (v <= acc) {
            const first = Math.floor((sizeStart * n) / 100);
            const len = Math.max(1, Math.floor((n * z.sizePct) / 100));
            return Math.min(n - 1, first + Math.floor(rng() * len));
          }
          sizeStart += z.sizePct;
        }
        return Math.floor(rng() * n);
      };
    }
  }
}
