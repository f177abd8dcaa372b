import test from 'ava';
import { emptyDirection, type JobResult, type RunResult } from '../src/report/result.js';
import {
  flattenCounters,
  formatModelSpeed,
  formatNameValueRows,
  formatProfileTable,
  formatTable,
  formatVmstackReport,
  formatVmstackTables,
} from '../src/report/tables.js';
import { sampleVmstackReport } from './helpers/vmstack-report.js';

function job(name: string, jobRuntimeNs: number, groupid = 0): JobResult {
  return {
    jobname: name,
    groupid,
    jobOptions: {},
    read: emptyDirection(),
    write: emptyDirection(),
    jobRuntimeNs,
    usrCpuPct: 0,
    sysCpuPct: 0,
    ctx: 0,
    error: 0,
    iodepth: 1,
  };
}

/** Two jobs of 1 ms each: 2 ms of vCPU model time; 1 MiB moved. */
function synthetic(): RunResult {
  return {
    timestampMs: 0,
    globalOptions: {},
    jobs: [job('a', 1_000_000), job('b', 1_000_000)],
    vmstack: sampleVmstackReport(),
  };
}

test('formatTable pads every column to its widest cell, with a dashed rule', (t) => {
  const out = formatTable(
    ['N', 'Name'],
    [
      ['1', 'alpha'],
      ['100', 'b'],
    ],
    ['right', 'left'],
  );
  t.is(out, ['    N  Name', '  ---  -----', '    1  alpha', '  100  b', ''].join('\n'));
});

test('formatNameValueRows aligns names left and values right', (t) => {
  t.is(
    formatNameValueRows([
      ['a', '1'],
      ['long name', '1000'],
    ]),
    '  a             1\n  long name  1000\n',
  );
  t.is(formatNameValueRows([]), '');
});

test('flattenCounters joins nested names with dots and leaves out nulls', (t) => {
  t.deepEqual(flattenCounters({ vfio: { map_dma: 3, peak: 1.5 }, lazy: null, bounce: { on: true }, name: 'x' }), [
    ['vfio.map_dma', '3'],
    ['vfio.peak', '1.50'],
    ['bounce.on', 'yes'],
    ['name', 'x'],
  ]);
});

test('profile: one row per function, sorted by self time, with %run, total, ns/call, ns/GB and where it ran', (t) => {
  const out = formatProfileTable(synthetic().vmstack.profile, 2_000_000);
  const rows = out.split('\n').filter((l) => /^\s+\d/.test(l));
  t.deepEqual(
    rows.map((r) => r.trim().split(/\s+/)),
    [
      ['500.00', '25.00%', '500.00', '16', '31250.0', '476837158', 'guest', 'iommu_dma_map_page'],
      ['118.08', '5.90%', '118.08', '16', '7380.0', '112609863', 'guest', 'nvme_irq'],
      ['3.20', '0.16%', '3.20', '16', '200.0', '3051758', 'guest', 'viommu_unmap_pages'],
      ['0.00', '0.00%', '0.00', '0', '-', '0', 'host', 'vfio_pin_pages_remote'],
    ],
  );
  t.regex(out, /Self µs\s+%run\s+Total µs\s+Calls\s+ns\/call\s+ns\/GB\s+Where\s+Function/);
  t.regex(out, /2000\.00 µs = Σ job runtimes/);
  // columns line up: every row has its Function column where the header has it
  const lines = out.split('\n').filter((l) => l.startsWith('  '));
  const col = lines[0].indexOf('Function');
  for (const l of lines.slice(2)) t.regex(l.slice(col), /^[a-z_]+$/);
});

test('profile with no calls and no run time says so instead of dividing by zero', (t) => {
  t.regex(formatProfileTable({}, 0), /\(no profiled calls\)/);
  t.regex(
    formatProfileTable({ f: { calls: 1, ns: 5, self_ns: 5, ns_per_gb: 0, self_ns_per_gb: 0, where: 'vmm' } }, 0),
    /0\.01\s+-\s+0\.01\s+1\s+5\.0\s+0\s+vmm\s+f\n/,
  );
});

test('the model_speed line gives simulated I/Os per wall second and simulated time per wall time', (t) => {
  t.is(
    formatModelSpeed({
      simulated_ios: 16,
      simulated_ns: 124_000_000,
      run_wall_ms: 808,
      job_loop_wall_ms: 62,
      simulated_ios_per_wall_s: 258,
      sim_time_per_wall_time: 2,
    }),
    'model_speed: 258 simulated I/Os per wall second, 2 s simulated per wall second ' +
      '(16 I/Os, 124.000 ms of model time in 62 ms of job loop; whole run with worker start-up 808 ms)\n',
  );
});

test('all tables of a run: what ran, lock_stat, profile, counters, verify, leaks, model speed — no JSON', (t) => {
  const out = formatVmstackTables(synthetic());
  t.regex(out, /^vmstack: strategy=strict clock=virtual driver=v5\.10 untrusted=no workers=5\n/);
  t.regex(out, /lock_stat version 0\.4/);
  t.regex(out, /^\s+viommu->request_lock:\s+0\s+2\s+0\.10\s+0\.90\s+1\.00\s+0\.50\s+1\s+51\s/m);
  t.regex(out, /^\s+iommu->lock:/m);
  t.regex(out, /^# profile/m);
  t.regex(out, /iommu_dma_map_page/);
  t.regex(out, /^counters\n {2}virtio_iommu\.attach\s+1\n {2}virtio_iommu\.detach\s+1\n {2}virtio_iommu\.map\s+17\n {2}virtio_iommu\.unmap\s+16\n/m);
  t.regex(out, /^ {2}vfio\.map_dma\s+17\n/m);
  t.regex(out, /^ {2}nvme\.interrupts\s+20$/m);
  t.regex(out, /^ {2}dma\.strict_mappings\s+16$/m);
  t.notRegex(out, /lazy|bounce\.|swiotlb\./, 'counters of components the run did not use are left out');
  t.regex(out, /^verify\n {2}blocks checked\s+256\n {2}corrupt\s+1\n {2}overwritten by another job\s+0\n/m);
  t.regex(out, /^leaks[^\n]*\n {2}iovas\s+0\n {2}iova_mappings_in_vmm\s+1\n {2}pinned_pages\s+24\n {2}locked_vm_pages\s+0\n/m);
  t.regex(out, /^model_speed: 258 simulated I\/Os per wall second, 0\.5 s simulated per wall second/m);
  t.notRegex(out, /[{}"]/, 'no raw JSON in normal output');
  // section order as documented
  const order = ['vmstack:', 'lock_stat', '# profile', 'counters', 'verify', 'leaks', 'model_speed'].map((s) => out.indexOf(s));
  t.deepEqual(
    [...order].sort((a, b) => a - b),
    order,
  );
  t.false(order.includes(-1));
});

test('several barrier groups: the tables of each under its own header', (t) => {
  const g0 = synthetic();
  const g1 = synthetic();
  g1.jobs = [job('c', 4_000_000, 1)];
  const out = formatVmstackReport([g0, g1]);
  t.regex(out, /==== barrier group 0 ====/);
  t.regex(out, /==== barrier group 1 ====/);
  t.true(out.indexOf('barrier group 0') < out.indexOf('barrier group 1'));
  // %run of each group is over its own jobs' model time
  t.regex(out.slice(out.indexOf('barrier group 1')), /iommu_dma_map_page/);
  t.regex(out.slice(out.indexOf('barrier group 1')), /\s12\.50%\s/);
  t.is(formatVmstackReport([g0]), formatVmstackTables(g0));
});
