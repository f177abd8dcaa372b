process.env.TZ = 'UTC'; // fio's "time" is ctime() in the local zone; pin it

import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import test from 'ava';
import { cFixed, fioLatencyDistribution, fioPercentiles, fioRuntimeMs, formatFioJson, toFioJson } from '../src/report/fio-json.js';
import type { DirectionResult, FioRun, Histogram, JobResult } from '../src/report/result.js';
import { createLatencyHistogram, decodeHistogram, emptyDirection, encodeHistogram, histogramBuckets, mergeHistograms } from '../src/report/result.js';
import { hist, range } from './helpers/histograms.js';
import { sampleVmstackReport } from './helpers/vmstack-report.js';

type Json = Record<string, any>;

function job(name: string, groupid: number, read: DirectionResult, write: DirectionResult, extra: Partial<JobResult> = {}): JobResult {
  return {
    jobname: name,
    groupid,
    jobOptions: { rw: 'read', bs: '4k' },
    read,
    write,
    jobRuntimeNs: 260_500_000,
    usrCpuPct: 12.5,
    sysCpuPct: 30,
    ctx: 42,
    error: 0,
    iodepth: 1,
    ...extra,
  };
}

/** a: 1000 reads of 4 KiB in 250 ms, clat 1000..1999 ns (exact in hdr), slat 500 ns. */
function jobA(): JobResult {
  return job(
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
}

/** b: 500 reads of 4 KiB in 500 ms; one 5 ns completion, 499 of 3 ms. */
function jobB(): JobResult {
  return job(
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
    { jobRuntimeNs: 510_000_000 },
  );
}

function run(jobs: JobResult[]): FioRun {
  return {
    timestampMs: 1718334968213,
    globalOptions: { ioengine: 'vmstack', direct: '1' },
    jobs,
    vmstack: sampleVmstackReport(),
  };
}

const PERCENTILE_KEYS = [
  '1.000000',
  '5.000000',
  '10.000000',
  '20.000000',
  '30.000000',
  '40.000000',
  '50.000000',
  '60.000000',
  '70.000000',
  '80.000000',
  '90.000000',
  '95.000000',
  '99.000000',
  '99.500000',
  '99.900000',
  '99.950000',
  '99.990000',
];

test('top level: fio keys in fio order, timestamps, version, options, vmstack last', (t) => {
  const doc = toFioJson(run([jobA()]), { plus: false }) as Json;
  t.deepEqual(Object.keys(doc), ['fio version', 'timestamp', 'timestamp_ms', 'time', 'global options', 'jobs', 'disk_util', 'vmstack']);
  t.regex(doc['fio version'], /^fio-3\.33 \(vmstack \d+\.\d+\.\d+\)$/);
  t.is(doc.timestamp, 1718334968);
  t.is(doc.timestamp_ms, 1718334968213);
  t.is(doc.time, 'Fri Jun 14 03:16:08 2024'); // the same instant as a real fio-3.33 run printed
  t.deepEqual(doc['global options'], { ioengine: 'vmstack', direct: '1' });
  t.deepEqual(doc.disk_util, []);
  t.deepEqual(doc.vmstack, sampleVmstackReport());
  const custom = toFioJson(run([jobA()]), { plus: false, fioVersion: 'vmstack-test' }) as Json;
  t.is(custom['fio version'], 'vmstack-test');
  const noGlobals = toFioJson({ ...run([jobA()]), globalOptions: {} }, { plus: false }) as Json;
  t.false('global options' in noGlobals, 'fio omits an empty options list');
});

test('job: keys in fio order and the per-job scalars', (t) => {
  const [a, b] = (toFioJson(run([jobA(), jobB()]), { plus: false }) as Json).jobs;
  t.deepEqual(Object.keys(a), [
    'jobname',
    'groupid',
    'error',
    'eta',
    'elapsed',
    'job options',
    'read',
    'write',
    'trim',
    'sync',
    'job_runtime',
    'usr_cpu',
    'sys_cpu',
    'ctx',
    'majf',
    'minf',
    'iodepth_level',
    'iodepth_submit',
    'iodepth_complete',
    'latency_ns',
    'latency_us',
    'latency_ms',
    'latency_depth',
    'latency_target',
    'latency_percentile',
    'latency_window',
  ]);
  t.is(a.jobname, 'a');
  t.is(a.eta, 0);
  t.is(a.elapsed, 1, 'longest job 510 ms → 1 s, rounded up as fio');
  t.is(b.elapsed, 1);
  t.deepEqual(a['job options'], { rw: 'read', bs: '4k' });
  t.is(a.job_runtime, 260);
  t.is(a.usr_cpu, 12.5);
  t.is(a.sys_cpu, 30);
  t.is(a.ctx, 42);
  t.is(a.majf, 0);
  t.is(a.minf, 0);
  t.deepEqual(a.iodepth_level, { '1': 100, '2': 0, '4': 0, '8': 0, '16': 0, '32': 0, '>=64': 0 });
  t.deepEqual(b.iodepth_level, { '1': 0, '2': 0, '4': 0, '8': 0, '16': 0, '32': 0, '>=64': 0 }, 'not measured: zeros');
  t.deepEqual(Object.keys(a.iodepth_submit), ['0', '4', '8', '16', '32', '64', '>=64']);
  t.deepEqual(a.sync, { total_ios: 0, lat_ns: { min: 0, max: 0, mean: 0, stddev: 0, N: 0 } });
  t.is(a.latency_depth, 1);
  t.is(a.latency_target, 0);
  t.is(a.latency_percentile, 100);
  t.is(a.latency_window, 0);
});

test('read: bw in KiB/s, bw_bytes, iops, runtime ms, by fio integer rules', (t) => {
  const r = (toFioJson(run([jobA()]), { plus: false }) as Json).jobs[0].read;
  t.is(r.io_bytes, 4_096_000);
  t.is(r.io_kbytes, 4000);
  t.is(r.runtime, 250);
  t.is(r.bw_bytes, 16_384_000); // 4096000 B / 0.25 s
  t.is(r.bw, 16_000); // io_bytes / 1024 / runtime s
  t.is(r.iops, 4000);
  t.is(r.total_ios, 1000);
  t.is(r.short_ios, 0);
  t.is(r.drop_ios, 0);
});

test('clat_ns: min, max, mean, sample stddev, N and fio percentiles', (t) => {
  const c = (toFioJson(run([jobA()]), { plus: false }) as Json).jobs[0].read.clat_ns;
  t.deepEqual(Object.keys(c), ['min', 'max', 'mean', 'stddev', 'N', 'percentile']);
  t.is(c.min, 1000);
  t.is(c.max, 1999);
  t.is(c.N, 1000);
  t.is(c.mean, 1499.5);
  t.true(Math.abs(c.stddev - Math.sqrt((1000 * 1001) / 12)) < 1e-9);
  t.deepEqual(Object.keys(c.percentile), PERCENTILE_KEYS);
  // the k-th smallest value, k = first count reaching p/100·N; 99.9 as a double is
  // 99.9000000000000057, so 999.00000000000006 needs the 1000th sample, as in fio
  t.deepEqual(Object.values(c.percentile), [1009, 1049, 1099, 1199, 1299, 1399, 1499, 1599, 1699, 1799, 1899, 1949, 1989, 1994, 1999, 1999, 1999]);
  t.false('bins' in c, 'bins only with json+');
});

test('slat_ns and lat_ns carry no percentiles (fio defaults: clat_percentiles only)', (t) => {
  const r = (toFioJson(run([jobA()]), { plus: true }) as Json).jobs[0].read;
  t.deepEqual(r.slat_ns, { min: 500, max: 500, mean: 500, stddev: 0, N: 1000 });
  t.deepEqual(Object.keys(r.lat_ns), ['min', 'max', 'mean', 'stddev', 'N']);
  t.is(r.lat_ns.min, 1500);
  t.is(r.lat_ns.max, 2499);
  t.is(r.lat_ns.N, 1000);
});

test('json+: clat_ns.bins maps each bucket value (ns, string) to its count', (t) => {
  const [a, b] = (toFioJson(run([jobA(), jobB()]), { plus: true }) as Json).jobs;
  const bins = a.read.clat_ns.bins as Record<string, number>;
  t.is(Object.keys(bins).length, 1000);
  t.is(bins['1000'], 1);
  t.is(bins['1999'], 1);
  t.is(
    Object.values(bins).reduce((x, y) => x + y, 0),
    1000,
  );
  // 3 ms lands in an hdr bucket of 2048 ns: [2998272, 3000319], midpoint 2999296
  t.deepEqual(b.read.clat_ns.bins, { '5': 1, '2999296': 499 });
  t.false('bins' in a.write.clat_ns, 'no samples: no percentile, no bins');
});

test('bw_* and iops_* from the samples; bw_agg against the group aggregate', (t) => {
  const [a, b] = (toFioJson(run([jobA(), jobB()]), { plus: false }) as Json).jobs;
  const r = a.read;
  t.is(r.bw_min, 3000);
  t.is(r.bw_max, 5000);
  t.is(r.bw_mean, 4000);
  t.is(r.bw_dev, 1000);
  t.is(r.bw_samples, 3);
  // group 0 read: (4096000 + 2048000) B over the longest runtime 500 ms = 12000 KiB/s
  t.true(Math.abs(r.bw_agg - (4000 * 100) / 12000) < 1e-12);
  t.is(r.iops_min, 900);
  t.is(r.iops_max, 1100);
  t.is(r.iops_mean, 1000);
  t.is(r.iops_stddev, 100);
  t.is(r.iops_samples, 3);
  // b gave no samples: fio's no-sample values
  for (const k of ['bw_min', 'bw_max', 'bw_agg', 'bw_mean', 'bw_dev', 'bw_samples', 'iops_min', 'iops_max', 'iops_mean', 'iops_stddev', 'iops_samples']) {
    t.is(b.read[k], 0, k);
  }
});

test('latency_ns/us/ms: fio io_u_mark_latency ranges, percent of issued I/Os', (t) => {
  const [a, b] = (toFioJson(run([jobA(), jobB()]), { plus: false }) as Json).jobs;
  t.is(a.latency_us['2'], 100, '1000..1999 ns are 1 µs: the "2" bucket');
  t.is(
    Object.values(a.latency_ns).reduce((x: number, y) => x + (y as number), 0),
    0,
  );
  t.is(b.latency_ns['10'], (1 / 500) * 100, '5 ns: the 4..9 bucket, 1 of 500');
  t.is(b.latency_ms['4'], (499 / 500) * 100, '3 ms: the 2..3 ms bucket');
  t.deepEqual(Object.keys(b.latency_ms), ['2', '4', '10', '20', '50', '100', '250', '500', '750', '1000', '2000', '>=2000']);
  // a nonzero share under 0.01 % is shown as 0.01 %, as fio does
  const many = job(
    'm',
    0,
    { ...emptyDirection(), ioBytes: 4096 * 20000, totalIos: 20000, runtimeNs: 1e9, clatNs: hist([100, 1], [3000, 19999]) },
    emptyDirection(),
  );
  const d = fioLatencyDistribution(many);
  t.is(d.ns[6], 0.01);
  t.is(d.us[1], (19999 / 20000) * 100);
  const huge = job('h', 0, { ...emptyDirection(), ioBytes: 4096, totalIos: 1, runtimeNs: 1e9, clatNs: hist([5_000_000_000, 1]) }, emptyDirection());
  t.is(fioLatencyDistribution(huge).ms[11], 100, '5 s: >=2000 ms');
});

test('a read-only job has a zeroed write and trim section exactly as fio prints it', (t) => {
  const doc = toFioJson(run([jobA()]), { plus: true }) as Json;
  const zeroLat = { min: 0, max: 0, mean: 0, stddev: 0, N: 0 };
  const zero = {
    io_bytes: 0,
    io_kbytes: 0,
    bw_bytes: 0,
    bw: 0,
    iops: 0,
    runtime: 0,
    total_ios: 0,
    short_ios: 0,
    drop_ios: 0,
    slat_ns: zeroLat,
    clat_ns: zeroLat,
    lat_ns: zeroLat,
    bw_min: 0,
    bw_max: 0,
    bw_agg: 0,
    bw_mean: 0,
    bw_dev: 0,
    bw_samples: 0,
    iops_min: 0,
    iops_max: 0,
    iops_mean: 0,
    iops_stddev: 0,
    iops_samples: 0,
  };
  t.deepEqual(doc.jobs[0].write, zero);
  t.deepEqual(Object.keys(doc.jobs[0].write), Object.keys(zero));
  t.deepEqual(doc.jobs[0].trim, zero);
  // text: the "read" section of a write-only fio-3.33 run, byte for byte
  const fio333 = `      "write" : {
        "io_bytes" : 0,
        "io_kbytes" : 0,
        "bw_bytes" : 0,
        "bw" : 0,
        "iops" : 0.000000,
        "runtime" : 0,
        "total_ios" : 0,
        "short_ios" : 0,
        "drop_ios" : 0,
        "slat_ns" : {
          "min" : 0,
          "max" : 0,
          "mean" : 0.000000,
          "stddev" : 0.000000,
          "N" : 0
        },
        "clat_ns" : {
          "min" : 0,
          "max" : 0,
          "mean" : 0.000000,
          "stddev" : 0.000000,
          "N" : 0
        },
        "lat_ns" : {
          "min" : 0,
          "max" : 0,
          "mean" : 0.000000,
          "stddev" : 0.000000,
          "N" : 0
        },
        "bw_min" : 0,
        "bw_max" : 0,
        "bw_agg" : 0.000000,
        "bw_mean" : 0.000000,
        "bw_dev" : 0.000000,
        "bw_samples" : 0,
        "iops_min" : 0,
        "iops_max" : 0,
        "iops_mean" : 0.000000,
        "iops_stddev" : 0.000000,
        "iops_samples" : 0
      },
`;
  t.true(formatFioJson(run([jobA()]), { plus: true }).includes(fio333));
});

test('formatFioJson: fio printer (" : ", 2-space indent, floats %f), valid JSON, vmstack verbatim', (t) => {
  const text = formatFioJson(run([jobA(), jobB()]), { plus: false });
  t.true(text.startsWith('{\n  "fio version" : "fio-3.33 (vmstack '));
  t.true(text.endsWith('\n}\n'));
  t.true(text.includes('\n  "timestamp" : 1718334968,\n'));
  t.true(text.includes('\n  "jobs" : [\n    {\n      "jobname" : "a",\n'));
  t.true(text.includes('\n        "iops" : 4000.000000,\n'));
  t.true(text.includes('\n        "bw" : 16000,\n'));
  t.true(text.includes('\n          "mean" : 1499.500000,\n'));
  t.true(text.includes('\n            "99.900000" : 1999,\n'));
  t.true(text.includes('\n      "usr_cpu" : 12.500000,\n'));
  t.true(text.includes('\n        "1" : 100.000000,\n'));
  t.true(text.includes('\n      "latency_percentile" : 100.000000,\n'));
  t.true(text.includes('\n  "disk_util" : [\n\n  ],\n'), 'empty array printed as fio prints one');
  t.true(text.includes('\n  "vmstack" : {\n    "strategy" : "strict",\n    "untrusted" : false,\n'));
  t.true(text.includes('\n    "workers" : [\n      {\n        "role" : "guest-kernel/vcpu0",\n        "thread_id" : 1,\n'));
  t.true(text.includes('\n        "ns_per_gb" : 112609863.28,\n'), 'vmstack floats printed as JSON numbers, not %f');
  t.true(text.includes('\n      "lazy" : null,\n'));
  const parsed = JSON.parse(text) as Json;
  const doc = toFioJson(run([jobA(), jobB()]), { plus: false }) as Json;
  t.deepEqual(parsed.vmstack, doc.vmstack);
  t.deepEqual(parsed.jobs[0].read.clat_ns.percentile, doc.jobs[0].read.clat_ns.percentile);
  t.is(parsed.jobs[0].read.bw_agg, Number(cFixed(doc.jobs[0].read.bw_agg, 6)));
});

test('bandwidth and iops reproduce real fio runs from their counts', (t) => {
  // fio-3.42, 4 KiB randwrite: io_bytes 154173440, total_ios 37592, runtime 10003 ms
  const w1 = toFioJson(run([job('x', 0, emptyDirection(), { ...emptyDirection(), ioBytes: 154_173_440, totalIos: 37_592, runtimeNs: 10_003e6 })]), {
    plus: false,
  }) as Json;
  const x = w1.jobs[0].write;
  t.is(x.bw_bytes, 15_412_720);
  t.is(x.bw, 15_051);
  t.is(x.io_kbytes, 150_560);
  t.is(cFixed(x.iops, 6), '3758.072578');
  // fio-3.33: io_bytes 137438953472, total_ios 33554432, runtime 70475 ms
  const w2 = toFioJson(run([job('y', 0, emptyDirection(), { ...emptyDirection(), ioBytes: 137_438_953_472, totalIos: 33_554_432, runtimeNs: 70_475e6 })]), {
    plus: false,
  }) as Json;
  const y = w2.jobs[0].write;
  t.is(y.bw_bytes, 1_950_180_255);
  t.is(y.bw, 1_904_472);
  t.is(y.io_kbytes, 134_217_728);
  t.is(cFixed(y.iops, 6), '476118.226321');
});

test('runtime: ns → µs truncated → ms rounded up, as fio update_runtime()', (t) => {
  t.is(fioRuntimeMs(0), 0);
  t.is(fioRuntimeMs(999), 0);
  t.is(fioRuntimeMs(1000), 1);
  t.is(fioRuntimeMs(250_000_999), 250);
  t.is(fioRuntimeMs(250_001_000), 251);
});

test('percentiles follow fio calc_clat_percentiles on bucket counts', (t) => {
  const b = histogramBuckets(hist([10, 1], [20, 1], [30, 2]));
  t.deepEqual(fioPercentiles(b, [25, 50, 50.1, 75, 100]), [10, 20, 30, 30, 30]);
  t.deepEqual(fioPercentiles([], [50]), []);
  // 70/100·1000 is exactly 700: the 700th value, not the 701st
  t.deepEqual(fioPercentiles(histogramBuckets(hist(...range(1, 1000))), [70]), [700]);
  // 99.95 is 99.9500000000000028… as a double: of 2000 values fio (long double) needs
  // the 2000th, where the double product 99.95 / 100 * 2000 rounds to 1999 exactly
  t.deepEqual(fioPercentiles(histogramBuckets(hist(...range(1, 2000))), [99.95]), [2000]);
});

test('histogram statistics stay within hdr resolution for large values', (t) => {
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const h = createLatencyHistogram();
  const values: number[] = [];
  for (let i = 0; i < 5000; i++) {
    const v = Math.floor(10_000 + rnd() * 5_000_000);
    values.push(v);
    h.recordValue(v);
  }
  const c = (
    toFioJson(run([job('r', 0, { ...emptyDirection(), ioBytes: 4096 * 5000, totalIos: 5000, runtimeNs: 1e9, clatNs: h }, emptyDirection())]), {
      plus: false,
    }) as Json
  ).jobs[0].read.clat_ns;
  const trueMin = Math.min(...values);
  const trueMax = Math.max(...values);
  const trueMean = values.reduce((a, b) => a + b, 0) / values.length;
  t.true(c.min <= trueMin && c.min >= trueMin * (1 - 1 / 1024), `min ${c.min} vs ${trueMin}`);
  t.true(c.max >= trueMax && c.max <= trueMax * (1 + 1 / 1024), `max ${c.max} vs ${trueMax}`);
  t.true(Math.abs(c.mean - trueMean) / trueMean < 1e-3, `mean ${c.mean} vs ${trueMean}`);
  const sorted = [...values].sort((a, b) => a - b);
  const p50 = sorted[Math.ceil(0.5 * values.length) - 1];
  t.true(Math.abs(c.percentile['50.000000'] - p50) / p50 < 1e-3);
});

test('histograms: encode/decode round trip, merge, auto-resize after decode', (t) => {
  const h = hist([5, 2], [12_345, 3], [3_000_000, 1]);
  const d = decodeHistogram(encodeHistogram(h));
  t.deepEqual(histogramBuckets(d), histogramBuckets(h));
  t.is(d.totalCount, 6);
  d.recordValue(2 * 3_600_000_000_000); // beyond the initial 1 h range
  t.is(d.totalCount, 7);
  const m = mergeHistograms(createLatencyHistogram(), h, hist([5, 1]));
  t.is(m.totalCount, 7);
  t.is(histogramBuckets(m)[0].count, 3);
  t.throws(() => histogramBuckets({} as Histogram), { instanceOf: TypeError });
});

test('histograms cross a worker boundary as strings', async (t) => {
  const here = dirname(fileURLToPath(import.meta.url));
  const resultUrl = pathToFileURL(join(here, '../src/report/result.js')).href;
  const code = `
    const { parentPort } = require('node:worker_threads');
    import(${JSON.stringify(resultUrl)}).then((r) => {
      const h = r.createLatencyHistogram();
      for (let v = 1000; v < 2000; v++) h.recordValue(v);
      h.recordValueWithCount(250000, 10);
      parentPort.postMessage(r.encodeHistogram(h));
    });
  `;
  const encoded = await new Promise<string>((resolve, reject) => {
    const w = new Worker(code, { eval: true });
    w.once('message', (m: string) => {
      resolve(m);
      void w.terminate();
    });
    w.once('error', reject);
  });
  const h = decodeHistogram(encoded);
  t.is(h.totalCount, 1010);
  const b = histogramBuckets(h);
  t.is(b[0].valueNs, 1000);
  t.is(b[b.length - 1].count, 10);
});

test('cFixed rounds like glibc printf, ties to even', (t) => {
  t.is(cFixed(0.125, 2), '0.12');
  t.is(cFixed(0.375, 2), '0.38');
  t.is(cFixed(0.625, 1), '0.6');
  t.is(cFixed(2.5, 0), '2');
  t.is(cFixed(1.005, 2), '1.00'); // 1.00499999999999989… is no tie
  t.is(cFixed(-0.125, 2), '-0.12');
  t.is(cFixed(0, 6), '0.000000');
  t.is(cFixed(99.99, 6), '99.990000');
});
