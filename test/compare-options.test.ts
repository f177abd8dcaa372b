/**
 * `vmstack compare` with run's model and topology options, `--profile all`,
 * `--experiment untrusted`, and `vmstack sensitivity`, through the CLI at
 * small sizes:
 *
 * - a cell with model options is the `vmstack run` of the same job with the
 *   same options (I/O count, bytes, model runtime, virtio-iommu MAPs), and the
 *   options change what runs;
 * - what compare sets per cell (the strategy, always_bounce_limit, a topology
 *   file) is refused in one line with exit 2;
 * - `--profile all` prints one table per profile file in profiles/;
 * - the untrusted experiment runs on bare metal with the drive untrusted: the
 *   swiotlb way maps every 4 KiB page of a 64k I/O on its own and copies
 *   nothing (fio's buffers are whole pages), the pool copies every byte read
 *   and maps almost nothing; each way is the `vmstack run` of the same job;
 * - sensitivity: a value the experiment never uses moves no ratio, the drive's
 *   read bandwidth halved lowers the 64k ratio, and the baseline is compare's
 *   ratio at the same size.
 */

import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DEFAULT_PROFILE_PATH, loadProfile } from '@vmstack/shm';
import test from 'ava';
import type { CompareResult } from '../packages/cli/src/compare/compare.js';
import type { UntrustedResult } from '../packages/cli/src/compare/untrusted.js';
import type { SensitivityResult } from '../packages/cli/src/sensitivity/sensitivity.js';

const execFileAsync = promisify(execFile);
const cli = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));
const MiB = 1024 * 1024;

async function vmstack(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(process.execPath, [cli, ...args], { timeout: 300_000, maxBuffer: 64 * MiB });
  return stdout;
}

/** exit code and stderr of a run expected to fail */
async function vmstackFails(args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await execFileAsync(process.execPath, [cli, ...args], { timeout: 60_000 });
  } catch (e) {
    const err = e as { code: number; stderr: string };
    return { code: err.code, stderr: err.stderr };
  }
  throw new Error(`vmstack ${args.join(' ')} succeeded`);
}

interface FioJson {
  jobs: { read: { io_bytes: number; total_ios: number; runtime: number } }[];
  vmstack: { counters: { virtio_iommu: { map: number } }; cpu: { busy_pct: number[] } };
}

test('compare with --driver, --buffer_contiguity, --vmm and --vms: each cell is the run of the same job with the same options', async (t) => {
  const model = ['--driver', 'v6.x', '--buffer_contiguity', 'huge', '--vmm', 'no-sandbox', '--vms', '2'];
  const withOptions = JSON.parse(await vmstack(['compare', '--size', '1m', '--bs', '16k', ...model, '--output-format', 'json'])) as CompareResult;
  const plain = JSON.parse(await vmstack(['compare', '--size', '1m', '--bs', '16k', '--output-format', 'json'])) as CompareResult;
  t.regex(withOptions.experiment, /driver v6\.x/);
  t.regex(withOptions.experiment, /--vmm no-sandbox/);
  const row = withOptions.rows[0];
  t.not(row.strict.runtimeNs, plain.rows[0].strict.runtimeNs, 'the options change the strict run');
  for (const cell of [row.strict, row.pool]) {
    t.is(cell.ios, (2 * MiB) / (16 * 1024), `${cell.strategy}: two VMs each read the whole 1 MiB region`);
    const bounce = cell.strategy === 'bounce' ? ['--always-bounce-limit', '16k'] : [];
    const args = ['run', '--rw', 'read', '--direct', '1', '--ioengine', 'libaio', '--iodepth', '64', '--bs', '16k', '--size', '1m'];
    const fio = JSON.parse(
      await vmstack([...args, '--strategy', cell.strategy, '--guest-ram', '256m', ...bounce, ...model, '--output-format', 'json']),
    ) as FioJson;
    t.is(
      fio.jobs.reduce((s, j) => s + j.read.total_ios, 0),
      cell.ios,
      `${cell.strategy}: I/Os`,
    );
    t.is(
      fio.jobs.reduce((s, j) => s + j.read.io_bytes, 0),
      cell.ioBytes,
      `${cell.strategy}: bytes`,
    );
    t.is(fio.vmstack.counters.virtio_iommu.map, cell.viommuMaps, `${cell.strategy}: virtio-iommu MAPs`);
    t.is(Math.max(...fio.jobs.map((j) => j.read.runtime)), Math.ceil(Math.floor(cell.runtimeNs / 1000) / 1000), `${cell.strategy}: runtime`);
  }
});

test('compare refuses what it sets per cell, and an unknown experiment, in one line with exit 2', async (t) => {
  for (const [args, field] of [
    [['--strategy', 'strict'], '--strategy'],
    [['--always-bounce-limit', '64k'], '--always-bounce-limit'],
    [['--topology', 'shape.json'], '--topology'],
    [['--experiment', 'other'], '--experiment'],
    [['--vmm', 'firecracker'], '--vmm'],
  ] as const) {
    const r = await vmstackFails(['compare', '--size', '1m', ...args]);
    t.is(r.code, 2, `${args.join(' ')}: exit 2`);
    t.is(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
    t.true(r.stderr.includes(field), `${args.join(' ')}: names ${field}: ${r.stderr}`);
  }
});

test('compare --profile all: one table per profile in profiles/, and JSON with every profile', async (t) => {
  const files = readdirSync(dirname(DEFAULT_PROFILE_PATH)).filter((f) => f.endsWith('.json'));
  const names = files.map((f) => loadProfile(`${dirname(DEFAULT_PROFILE_PATH)}/${f}`).name).sort();
  const text = await vmstack(['compare', '--profile', 'all', '--size', '512k', '--bs', '4k']);
  const headers = text.split('\n').filter((l) => l.startsWith('vmstack compare — profile '));
  t.deepEqual(headers.map((h) => h.slice('vmstack compare — profile '.length)).sort(), names);
  const json = JSON.parse(await vmstack(['compare', '--profile', 'all', '--size', '512k', '--bs', '4k', '--output-format', 'json'])) as
    | CompareResult
    | { profiles: CompareResult[] };
  const results = 'profiles' in json ? json.profiles : [json];
  t.deepEqual(results.map((r) => r.profile).sort(), names);
  for (const r of results) t.is(r.rows.length, 1);
});

test('compare --experiment untrusted: bare metal, the drive untrusted; swiotlb maps each page and copies nothing, the pool copies every byte', async (t) => {
  const u = JSON.parse(await vmstack(['compare', '--experiment', 'untrusted', '--size', '4m', '--output-format', 'json'])) as UntrustedResult;
  t.is(u.experiment, 'untrusted');
  t.regex(u.description, /no VM/);
  t.is(u.rows.length, 1);
  const [swiotlb, pool] = u.rows[0].ways;
  t.deepEqual([swiotlb.way, pool.way], ['swiotlb', 'pool']);
  const ios = (4 * MiB) / (64 * 1024);
  for (const w of [swiotlb, pool]) {
    t.is(w.ios, ios);
    t.is(w.cpuBusyPct.length, 1, `${w.way}: one CPU ran the job`);
    t.true(w.hostSharePct > 0 && w.hostSharePct <= 100 / w.hostCpuThreads + 1e-9, `${w.way}: host share within one CPU's`);
  }
  // the driver's own setup mappings (queues, identify) add a few beside the I/Os'
  const setupMaps = swiotlb.iommuMapOps - 16 * ios;
  t.true(setupMaps >= 0 && setupMaps < 4, `swiotlb: each 4 KiB page of a 64k I/O mapped on its own (${swiotlb.iommuMapOps} maps for ${ios} I/Os)`);
  t.is(swiotlb.bytesCopiedToDevice + swiotlb.bytesCopiedFromDevice, 0, 'swiotlb: whole pages are not bounced');
  t.is(pool.bytesCopiedFromDevice, 4 * MiB, 'the pool: every byte read copied out of its buffer');
  t.is(pool.bytesCopiedToDevice, 0, 'a read copies nothing to the device');
  t.true(pool.iommuMapOpsPerIo < 1, 'the pool: slots stay mapped');
  t.is(u.rows[0].throughputRatio, pool.mibPerS / swiotlb.mibPerS);

  const args = ['run', '--rw', 'read', '--direct', '1', '--ioengine', 'libaio', '--iodepth', '64', '--bs', '64k', '--size', '4m', '--guest-ram', '256m'];
  const fio = JSON.parse(await vmstack([...args, '--platform', 'bare-metal', '--untrusted', '--strategy', 'strict', '--output-format', 'json'])) as FioJson;
  t.is(fio.jobs[0].read.total_ios, swiotlb.ios);
  t.is(fio.jobs[0].read.runtime, Math.ceil(Math.floor(swiotlb.runtimeNs / 1000) / 1000));
  t.deepEqual(fio.vmstack.cpu.busy_pct, swiotlb.cpuBusyPct);

  const text = await vmstack(['compare', '--experiment', 'untrusted', '--size', '4m']);
  t.regex(text, /^64k\s+swiotlb\s/m);
  t.regex(text, /^64k\s+pool\s/m);
});

test('sensitivity: an unused value moves nothing, the drive bandwidth halved lowers the 64k ratio, the baseline is compare at the same size', async (t) => {
  const keys = 'nvmeMediaReadBytesPerNs,lazyFlushTimeoutNs';
  const html = join(mkdtempSync(join(tmpdir(), 'vmstack-sens-')), 'sens.html');
  const r = JSON.parse(
    await vmstack(['sensitivity', '--keys', keys, '--bs', '64k', '--size', '4m', '--output-format', 'json', '--html', html]),
  ) as SensitivityResult;
  const page = readFileSync(html, 'utf8');
  // the tornado chart: one bar per changed value and factor, for the key that moved the ratio; none for the one that did not
  t.is((page.match(/<rect [^>]*><title>nvmeMediaReadBytesPerNs ×/g) ?? []).length, 2);
  t.false(page.includes('<title>lazyFlushTimeoutNs'));
  t.deepEqual(r.factors, [0.5, 2]);
  const row = r.rows[0];
  t.is(row.blockSize, '64k');
  t.is(row.keys[0].key, 'nvmeMediaReadBytesPerNs', 'the drive moves the 64k ratio most');
  const drive = row.keys[0];
  t.is(drive.points[0].value, 1.75);
  t.true(drive.points[0].ratio < row.baselineRatio, 'half the drive bandwidth: a lower ratio');
  const lazy = row.keys.find((k) => k.key === 'lazyFlushTimeoutNs');
  t.is(lazy?.maxAbsDeltaPct, 0, 'strict and the pool use no flush queue');
  const c = JSON.parse(await vmstack(['compare', '--bs', '64k', '--size', '4m', '--output-format', 'json'])) as CompareResult;
  t.is(row.baselineRatio, c.rows[0].modelRatio);

  const bad = await vmstackFails(['sensitivity', '--keys', 'noSuchKeyNs']);
  t.is(bad.code, 2);
  t.true(bad.stderr.includes('--keys'));
});

test('compare cells through 2 piscina threads give the runs serial gives, with model options', async (t) => {
  const args = ['compare', '--size', '1m', '--bs', '4k,16k', '--vmm', 'qemu-notifier', '--output-format', 'json'];
  const [serial, pooled] = await Promise.all([vmstack(args), vmstack([...args, '--parallel', '2'])]).then((xs) =>
    xs.map((x) => JSON.parse(x) as CompareResult),
  );
  const model = (c: CompareResult) => c.rows.flatMap((r) => [r.strict, r.pool]).map((x) => [x.strategy, x.blockSizeBytes, x.ios, x.runtimeNs, x.viommuMaps]);
  t.deepEqual(model(pooled), model(serial));
  t.is(pooled.parallel, 2);
});
