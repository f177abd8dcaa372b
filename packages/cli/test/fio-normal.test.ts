process.env.TZ = 'UTC'; // the job header carries ctime() in the local zone; pin it

import test from 'ava';
import { formatFioNormal, num2str } from '../src/report/fio-normal.js';
import type { DirectionResult, FioRun, JobResult } from '../src/report/result.js';
import { createLatencyHistogram, emptyDirection } from '../src/report/result.js';
import { hist, range } from './helpers/histograms.js';
import { sampleVmstackReport } from './helpers/vmstack-report.js';

function job(name: string, groupid: number, read: DirectionResult, write: DirectionResult, extra: Partial<JobResult> = {}): JobResult {
  return {
    jobname: name,
    groupid,
    jobOptions: {},
    read,
    write,
    jobRuntimeNs: 600_000_000,
    usrCpuPct: 12.5,
    sysCpuPct: 30,
    ctx: 42,
    error: 0,
    iodepth: 1,
    ...extra,
  };
}

/** a: 1000 reads of 4 KiB in 250 ms, clat 1000..1999 ns, slat 500 ns. */
const jobA = () =>
  job(
    'a',
    0,
    {
      ioBytes: 4096 * 1000,
      totalIos: 1000,
      runtimeNs: 250_000_000,
      slatNs: hist([500, 1000]),
      clatNs: hist(...range(1000, 1999)),
      latNs: hist(...range(1500, 2499)),
      bwSamplesKiBps: [3000, 4000, 5000],
      iopsSamples: [900, 1000, 1100],
    },
    emptyDirection(),
    { iodepthLevels: { '1': 100 } },
  );

/** b: 500 reads of 4 KiB in 500 ms; one 5 ns completion, 499 of 3 ms. */
const jobB = () =>
  job(
    'b',
    0,
    {
      ioBytes: 4096 * 500,
      totalIos: 500,
      runtimeNs: 500_000_000,
      slatNs: createLatencyHistogram(),
      clatNs: hist([5, 1], [3_000_000, 499]),
      latNs: hist([5, 1], [3_000_000, 499]),
    },
    emptyDirection(),
  );

/** c (group 1): 500 writes of 128 KiB in 100 ms; clat 50 µs / 150 µs; slat 3 ms / 200 ms. */
const jobC = () =>
  job(
    'c',
    1,
    emptyDirection(),
    {
      ioBytes: 131072 * 500,
      totalIos: 500,
      runtimeNs: 100_000_000,
      slatNs: hist([3_000_000, 250], [200_000_000, 250]),
      clatNs: hist([50_000, 250], [150_000, 250]),
      latNs: hist([50_000, 250], [150_000, 250]),
    },
    { iodepth: 32 },
  );

function run(jobs: JobResult[]): FioRun {
  return { timestampMs: 1718334968213, globalOptions: {}, jobs, vmstack: sampleVmstackReport() };
}

test('num2str reproduces fio strings (including its carry quirk)', (t) => {
  // from a real fio-3.42 run: bw 15412720 B/s, io 154173440 B, slat max 4765847 ns
  t.is(num2str(15_412_720, 4, 1, true, 'bytepersec'), '14.7MiB/s');
  t.is(num2str(15_412_720, 4, 1, false, 'bytepersec'), '15.4MB/s');
  t.is(num2str(154_173_440, 4, 1, true, 'byte'), '147MiB');
  t.is(num2str(154_173_440, 4, 1, false, 'byte'), '154MB');
  t.is(num2str(4_765_847, 6, 1, false, 'none'), '4765.8k');
  t.is(num2str(3758, 4, 1, false, 'none'), '3758');
  t.is(num2str(285_866, 4, 1, false, 'none'), '286k'); // carry: 866 ≥ 500
  t.is(num2str(16_384_000, 4, 1, true, 'bytepersec'), '15.6MiB/s'); // 0.625 → "0.6", glibc ties to even
  t.is(num2str(4_096_000, 4, 1, true, 'byte'), '4000KiB');
  t.is(num2str(14 * 1024 + 1000, 4, 1, true, 'byte'), '14.0KiB'); // fio prints 14.98 Ki as "14.0"
  t.is(num2str(0, 4, 1, true, 'byte'), '0B');
  t.is(num2str(1, 4, 1, false, 'bit'), '8bit');
});

test('the direction line matches a real fio run from the same counts', (t) => {
  const w = job('/dev/nvme8n4', 0, emptyDirection(), {
    ...emptyDirection(),
    ioBytes: 154_173_440,
    totalIos: 37_592,
    runtimeNs: 10_003e6,
  });
  const out = formatFioNormal(run([w]));
  t.true(out.includes('\n  write: IOPS=3758, BW=14.7MiB/s (15.4MB/s)(147MiB/10003msec)\n'));
  t.true(
    out.endsWith(
      '\nRun status group 0 (all jobs):\n' +
        '  WRITE: bw=14.7MiB/s (15.4MB/s), 14.7MiB/s-14.7MiB/s (15.4MB/s-15.4MB/s), io=147MiB (154MB), run=10003-10003msec\n',
    ),
  );
});

test('a read job: header, rates, latencies, percentiles, samples, cpu, depths', (t) => {
  const out = formatFioNormal(run([jobA(), jobB()]));
  const a = out.slice(0, out.indexOf('\nb: '));
  // lat 1500..2499 ns: exact up to 2047, then hdr buckets of 2 ns reported at their midpoint (low + 1)
  const mids = range(1500, 2499).map(([v]) => (v < 2048 ? v : v - (v % 2) + 1));
  const latMean = mids.reduce((x, y) => x + y, 0) / mids.length;
  const latDev = Math.sqrt(mids.reduce((x, v) => x + (v - latMean) ** 2, 0) / (mids.length - 1));
  t.is(
    a,
    `a: (groupid=0, jobs=1): err= 0: pid=${process.pid}: Fri Jun 14 03:16:08 2024
  read: IOPS=4000, BW=15.6MiB/s (16.4MB/s)(4000KiB/250msec)
    slat (nsec): min=500, max=500, avg=500.00, stdev= 0.00
    clat (nsec): min=1000, max=1999, avg=1499.50, stdev=288.82
     lat (nsec): min=1500, max=2499, avg=${latMean.toFixed(2)}, stdev=${latDev.toFixed(2)}
    clat percentiles (nsec):
     |  1.00th=[ 1009],  5.00th=[ 1049], 10.00th=[ 1099], 20.00th=[ 1199],
     | 30.00th=[ 1299], 40.00th=[ 1399], 50.00th=[ 1499], 60.00th=[ 1599],
     | 70.00th=[ 1699], 80.00th=[ 1799], 90.00th=[ 1899], 95.00th=[ 1949],
     | 99.00th=[ 1989], 99.50th=[ 1994], 99.90th=[ 1999], 99.95th=[ 1999],
     | 99.99th=[ 1999]
   bw (  KiB/s): min= 3000, max= 5000, per=33.33%, avg=4000.00, stdev=1000.00, samples=3
   iops        : min=  900, max= 1100, avg=1000.00, stdev=100.00, samples=3
  lat (usec)   : 2=100.00%
  cpu          : usr=12.50%, sys=30.00%, ctx=42, majf=0, minf=0
  IO depths    : 1=100.0%, 2=0.0%, 4=0.0%, 8=0.0%, 16=0.0%, 32=0.0%, >=64=0.0%
     submit    : 0=0.0%, 4=0.0%, 8=0.0%, 16=0.0%, 32=0.0%, 64=0.0%, >=64=0.0%
     complete  : 0=0.0%, 4=0.0%, 8=0.0%, 16=0.0%, 32=0.0%, 64=0.0%, >=64=0.0%
     issued rwts: total=1000,0,0,0 short=0,0,0,0 dropped=0,0,0,0
     latency   : target=0, window=0, percentile=100.00%, depth=1`,
  );
  t.true(Math.abs(latMean - 1999.5) < 1);
  t.false(out.includes('write:'), 'no write line for a read-only job');
  t.false(out.includes('viommu->request_lock') || out.includes('strict'), 'the vmstack section is not printed');
});

test('latency distribution lines and nsec/usec/msec unit choice', (t) => {
  const out = formatFioNormal(run([jobA(), jobB(), jobC()]));
  t.true(out.includes('\n  lat (nsec)   : 10=0.20%\n  lat (msec)   : 4=99.80%\n'));
  // b: min 5 ns keeps nsec; the 3 ms bucket's top is 3000319 ns
  t.true(out.includes('\n    clat (nsec): min=5, max=3000.3k, avg='));
  // c: clat min > 2 µs, max > 99999 ns, stdev > 1 µs → usec; hdr midpoints 50000 and 149952 ns
  const mean = (50_000 + 149_952) / 2;
  const dev = Math.sqrt((500 * (50_000 - mean) ** 2) / 499);
  t.true(out.includes(`\n    clat (usec): min=49, max=150, avg=${(mean / 1000).toFixed(2)}, stdev=${(dev / 1000).toFixed(2)}\n`));
  t.true(out.includes('\n    clat percentiles (usec):\n     |  1.00th=[   50],  5.00th=[   50], 10.00th=[   50], 20.00th=[   50],\n'));
  t.true(out.includes('\n     | 99.99th=[  150]\n'));
  // c: slat min > 2 ms, max > 99999999 ns, stdev > 1 ms → msec
  t.regex(out, /\n {4}slat \(msec\): min=2, max=200, avg=\d+\.\d\d, stdev=\d+\.\d\d\n/);
  t.true(out.includes('\n  write: IOPS=5000, BW=625MiB/s (655MB/s)(62.5MiB/100msec)\n'));
  t.true(out.includes('\n     latency   : target=0, window=0, percentile=100.00%, depth=32\n'));
});

test('run status groups aggregate bandwidth per group and direction', (t) => {
  const out = formatFioNormal(run([jobA(), jobB(), jobC()]));
  const tail = out.slice(out.indexOf('\nRun status group 0'));
  t.is(
    tail,
    '\nRun status group 0 (all jobs):\n' +
      // (4096000 + 2048000) B over the longest runtime 500 ms; slowest b 4096000 B/s, fastest a 16384000 B/s
      '   READ: bw=11.7MiB/s (12.3MB/s), 4000KiB/s-15.6MiB/s (4096kB/s-16.4MB/s), io=6000KiB (6144kB), run=250-500msec\n' +
      '\nRun status group 1 (all jobs):\n' +
      '  WRITE: bw=625MiB/s (655MB/s), 625MiB/s-625MiB/s (655MB/s-655MB/s), io=62.5MiB (65.5MB), run=100-100msec\n',
  );
});

test("jobs without I/O are skipped; errors print fio's err=NN (reason)", (t) => {
  const idle = job('idle', 0, emptyDirection(), emptyDirection());
  t.is(formatFioNormal(run([idle])), '\nRun status group 0 (all jobs):\n');
  const bad = jobA();
  bad.error = 84;
  bad.verify = { blocksChecked: 1000, corrupt: 3 };
  const out = formatFioNormal(run([bad]));
  t.true(
    out.startsWith(
      `a: (groupid=0, jobs=1): err=84 (verify: 3 of 1000 blocks corrupt, error=Invalid or incomplete multibyte or wide character): pid=${process.pid}: `,
    ),
  );
});
