import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type FioJobSpec, type ParsedJobs, validateJobSpec } from '@vmstack/guest-kernel';
import { InputError } from '@vmstack/shm';
import test, { type ExecutionContext } from 'ava';
import { expandFioKeywords, parseJobFileText } from '../src/fio/jobfile.js';
import { FIO_OPTION_ALIASES, FIO_OPTION_TABLE, type JobsFromFileOptions, jobsFromCommandLine, jobsFromFile, jobsFromJobFile } from '../src/fio/options.js';
import { parseCount, parseSizeBytes, parseTimeNs } from '../src/fio/sizes.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Jobs from job file text written inline. */
function jobsFromText(text: string, options: JobsFromFileOptions = {}): ParsedJobs {
  return jobsFromJobFile(parseJobFileText(text, 'test.fio', { env: options.env ?? {}, ...(options.keywords ? { keywords: options.keywords } : {}) }), options);
}

/** Asserts an InputError naming the field and value, whose message says what is allowed. */
function inputError(t: ExecutionContext, fn: () => unknown, field: string, value: unknown, ...allowed: (string | RegExp)[]): InputError {
  const e = t.throws(fn, { instanceOf: InputError });
  t.is(e.field, field, 'names the field');
  t.deepEqual(e.value, value, 'quotes the value as written');
  t.true(e.message.startsWith(`${field}: `), e.message);
  for (const a of allowed) {
    if (typeof a === 'string') t.true(e.message.includes(a), `message "${e.message}" says "${a}"`);
    else t.regex(e.message, a);
  }
  return e;
}

const oneJob = (options: string): string => `[job]\nsize=64m\n${options}\n`;

// --- the command line ---------------------------------------------------

test('command line: the brief example becomes numjobs specs named after --name', (t) => {
  const parsed = jobsFromCommandLine({
    rw: 'randrw',
    bs: '4k',
    iodepth: 64,
    numjobs: 4,
    size: '64m',
    runtime: 1,
    time_based: true,
    verify: 'crc32c',
    rwmixread: 70,
    randseed: 1,
    offset: 0,
    name: 'x',
  });
  t.is(parsed.jobs.length, 4);
  t.deepEqual(
    parsed.jobs.map((j) => j.jobIndex),
    [0, 1, 2, 3],
  );
  const expected: FioJobSpec = {
    name: 'x',
    jobIndex: 2,
    groupId: 0,
    reportGroupId: 0,
    rw: 'randrw',
    rwmixreadPct: 70,
    blockSizeBytes: 4096,
    readBs: { minBytes: 4096, maxBytes: 4096, split: [] },
    writeBs: { minBytes: 4096, maxBytes: 4096, split: [] },
    loops: 1,
    ioSizeBytes: null,
    numberIos: 0,
    randomDistribution: { kind: 'random' },
    rampTimeNs: 0,
    thinktimeNs: 0,
    thinktimeSpinNs: 0,
    thinktimeBlocks: 1,
    rate: { read: 0, write: 0 },
    rateIops: { read: 0, write: 0 },
    rateMin: { read: 0, write: 0 },
    rateIopsMin: { read: 0, write: 0 },
    sizeBytes: 64 * MiB,
    offsetBytes: 0,
    iodepth: 64,
    runtimeNs: 1_000_000_000,
    timeBased: true,
    verify: 'crc32c',
    doVerify: true,
    randseed: 1,
    ioengine: 'libaio',
    direct: false,
    randomMap: true,
    fadviseHint: true,
    endFsync: false,
    fsyncEveryIos: 0,
    fdatasyncEveryIos: 0,
  };
  t.deepEqual(parsed.jobs[2], expected);
  t.deepEqual(parsed.globalOptions, {});
  t.deepEqual(parsed.jobOptions.x, {
    rw: 'randrw',
    bs: '4k',
    iodepth: '64',
    numjobs: '4',
    size: '64m',
    runtime: '1',
    time_based: '1',
    verify: 'crc32c',
    rwmixread: '70',
    randseed: '1',
    offset: '0',
  });
  t.deepEqual(parsed.ignoredOptions, []);
});

test('command line: fio defaults where nothing is given (rw=read, bs=4k, iodepth=1, randseed=0x89, rwmixread=50), name vmstack', (t) => {
  const [job] = jobsFromCommandLine({ size: '1m', iodepth: undefined }).jobs;
  t.like(job, {
    name: 'vmstack',
    rw: 'read',
    blockSizeBytes: 4096,
    iodepth: 1,
    rwmixreadPct: 50,
    randseed: 0x89,
    runtimeNs: null,
    timeBased: false,
    verify: 'none',
    doVerify: true,
    offsetBytes: 0,
  });
});

test("command line: the caller's defaults apply under the options given; false flags mean 0", (t) => {
  const defaults = { rw: 'randread', bs: '4k', iodepth: 32, size: '1g', name: 'cli-default' };
  const [job] = jobsFromCommandLine({ bs: '128k', time_based: false, runtime: '500ms' }, defaults).jobs;
  t.is(jobsFromCommandLine({ name: 'mine' }, defaults).jobs[0].name, 'mine');
  t.like(job, { name: 'cli-default', rw: 'randread', blockSizeBytes: 128 * KiB, iodepth: 32, sizeBytes: GiB, timeBased: false, runtimeNs: 500e6 });
});

test('command line: errors name the option as --option', (t) => {
  inputError(t, () => jobsFromCommandLine({ size: '64m', bs: 3000 }), '--bs', '3000', 'a multiple of 4096 bytes from 4096 to 2 MiB (e.g. 4k, 128k)');
  inputError(t, () => jobsFromCommandLine({ size: '64m', timeBased: true }), '--timeBased', '1', 'not a fio option (did you mean time_based?)');
  inputError(t, () => jobsFromCommandLine({ size: '64m', name: '' }), '--name', '', 'a non-empty job name');
});

// --- job files ----------------------------------------------------------

const NVME_JOB_FILE = `
; Sequential then random, fio HOWTO style
[global]
ioengine=libaio
direct=1
bs=4k
size=256m
iodepth=32
runtime=\${RUNTIME}
time_based
group_reporting
thread
randrepeat=0
norandommap

[seq-read]
rw=read
numjobs=2
offset_increment=256m

[rand-read]
stonewall
rw=randread
bs=128k
iodepth=64
randseed=0x1234

[rand-mixed]
rw=randrw
rwmixwrite=30
verify=crc32c-intel
do_verify=0

[write-after]
wait_for_previous
rw=write
size=1g
`;

test('job file: global inheritance, per-section override, numjobs expansion, stonewall groups', (t) => {
  const parsed = jobsFromText(NVME_JOB_FILE, { env: { RUNTIME: '10s' } });
  const summary = parsed.jobs.map((j) => [j.name, j.jobIndex, j.groupId, j.rw, j.blockSizeBytes, j.iodepth, j.sizeBytes, j.offsetBytes]);
  t.deepEqual(summary, [
    ['seq-read', 0, 0, 'read', 4096, 32, 256 * MiB, 0],
    ['seq-read', 1, 0, 'read', 4096, 32, 256 * MiB, 256 * MiB],
    ['rand-read', 0, 1, 'randread', 128 * KiB, 64, 256 * MiB, 0],
    ['rand-mixed', 0, 1, 'randrw', 4096, 32, 256 * MiB, 0],
    ['write-after', 0, 2, 'write', 4096, 32, GiB, 0],
  ]);
  for (const job of parsed.jobs) t.like(job, { runtimeNs: 10e9, timeBased: true, direct: true, ioengine: 'libaio', randomMap: false });
  t.is(parsed.jobs[2].randseed, 0x1234);
  t.is(parsed.jobs[0].randseed, 0x89);
  t.like(parsed.jobs[3], { rwmixreadPct: 70, verify: 'crc32c', doVerify: false });
  t.deepEqual(parsed.ignoredOptions, ['thread', 'randrepeat']);
  t.deepEqual(parsed.globalOptions, {
    ioengine: 'libaio',
    direct: '1',
    bs: '4k',
    size: '256m',
    iodepth: '32',
    runtime: '10s',
    time_based: '',
    group_reporting: '',
    thread: '',
    randrepeat: '0',
    norandommap: '',
  });
  t.deepEqual(Object.keys(parsed.jobOptions), ['seq-read', 'rand-read', 'rand-mixed', 'write-after']);
  t.deepEqual(parsed.jobOptions['rand-read'], { stonewall: '', rw: 'randread', bs: '128k', iodepth: '64', randseed: '0x1234' });
});

test('job file: a job sees only the [global] sections above it, in order', (t) => {
  const parsed = jobsFromText('[global]\nsize=1m\nbs=8k\n[a]\n[global]\nbs=16k\nrw=write\n[b]\n[c]\nbs=32k\n');
  t.deepEqual(
    parsed.jobs.map((j) => [j.name, j.blockSizeBytes, j.rw]),
    [
      ['a', 8 * KiB, 'read'],
      ['b', 16 * KiB, 'write'],
      ['c', 32 * KiB, 'write'],
    ],
  );
  t.deepEqual(parsed.globalOptions, { size: '1m', bs: '16k', rw: 'write' });
});

test('job file: stonewall groups run one after another; new_group only starts a reporting group', (t) => {
  const parsed = jobsFromText('[global]\nsize=1m\n[first]\nstonewall\nnumjobs=2\n[second]\n[third]\nnew_group\n[fourth]\nstonewall=1\n[fifth]\nstonewall=0\n');
  t.deepEqual(
    parsed.jobs.map((j) => [j.name, j.jobIndex, j.groupId, j.reportGroupId]),
    [
      ['first', 0, 0, 0], // stonewall on the first job: nothing to wait for
      ['first', 1, 0, 0],
      ['second', 0, 0, 0],
      ['third', 0, 0, 1], // reported apart, still runs with first and second
      ['fourth', 0, 1, 2],
      ['fifth', 0, 1, 2],
    ],
  );
});

test('job file: stonewall in [global] puts every section (not every clone) in its own group', (t) => {
  const parsed = jobsFromText('[global]\nsize=1m\nstonewall\n[a]\nnumjobs=3\n[b]\n[c]\n');
  t.deepEqual(
    parsed.jobs.map((j) => `${j.name}${j.jobIndex}:${j.groupId}`),
    ['a0:0', 'a1:0', 'a2:0', 'b0:1', 'c0:2'],
  );
});

test('job file: name= renames a job; aliases readwrite/blocksize/timeout/fileoffset work', (t) => {
  const [job] = jobsFromText('[sec]\nname=pretty\nreadwrite=readwrite\nblocksize=64k\nsize=1m\ntimeout=2m\nfileoffset=1m\n').jobs;
  t.like(job, { name: 'pretty', rw: 'rw', blockSizeBytes: 64 * KiB, runtimeNs: 120e9, offsetBytes: MiB });
});

test('job file: the later of inverse options wins (direct/buffered, rwmixread/rwmixwrite)', (t) => {
  t.like(jobsFromText('[global]\nrwmixread=80\n[j]\nsize=1m\nrw=randrw\nrwmixwrite=10\n').jobs[0], { rwmixreadPct: 90 });
  t.like(jobsFromText('[global]\nbuffered=1\n[j]\nsize=1m\ndirect=1\n').jobs[0], { direct: true });
  t.like(jobsFromText('[global]\ndirect=1\nbuffered=0\n[j]\nsize=1m\n').jobs[0], { direct: true });
});

test("job file: command-line overrides beat [global] but not the job's own section; defaults are lowest", (t) => {
  const parsed = jobsFromText('[global]\nbs=8k\niodepth=4\n[a]\n[b]\niodepth=2\nbs=16k\n', {
    overrides: { iodepth: 128, bs: undefined },
    defaults: { size: '64m', bs: '4k', iodepth: 1 },
  });
  t.deepEqual(
    parsed.jobs.map((j) => [j.name, j.blockSizeBytes, j.iodepth, j.sizeBytes]),
    [
      ['a', 8 * KiB, 128, 64 * MiB],
      ['b', 16 * KiB, 2, 64 * MiB],
    ],
  );
  t.deepEqual(parsed.globalOptions, { bs: '8k', iodepth: '128' });
});

test('jobsFromFile reads the file and applies overrides; a missing file names its path', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmstack-options-'));
  const path = join(dir, 'two.fio');
  writeFileSync(path, '[global]\nsize=16m\nrw=randread\n[one]\n[two]\nrw=write\n');
  const parsed = jobsFromFile(path, { rw: 'read', numjobs: 2 });
  t.deepEqual(
    parsed.jobs.map((j) => `${j.name}/${j.jobIndex}:${j.rw}`),
    ['one/0:read', 'one/1:read', 'two/0:write', 'two/1:write'],
  );
  inputError(t, () => jobsFromFile(join(dir, 'nope.fio')), 'job file', join(dir, 'nope.fio'), 'ENOENT');
});

test('kb_base=1000 swaps the prefixes: k = 1000, kib = 1024', (t) => {
  const [job] = jobsFromText('[j]\nkb_base=1000\nbs=8kib\nsize=64mib\noffset=4096k\n').jobs;
  t.like(job, { blockSizeBytes: 8 * KiB, sizeBytes: 64 * MiB, offsetBytes: 4_096_000 });
  inputError(t, () => jobsFromText('[j]\nkb_base=999\nsize=1m\n'), '[j] kb_base', '999', '1024', '1000');
});

test('ignored options: real fio options that change nothing, and neutral values of unmodelled ones, each named once', (t) => {
  const parsed = jobsFromText(
    '[global]\nthread\nfilename=/dev/nvme0n1\nlatency_target=0\nwrite_barrier=0\nzonemode=none\nmem=malloc\n' +
      '[a]\nsize=1m\nthread=1\ndescription=first\nrandrepeat=1\niodepth_batch_submit=16\n[b]\nsize=1m\ninvalidate=1\nthread\nflow=0\n',
  );
  t.deepEqual(parsed.ignoredOptions, [
    'thread',
    'latency_target',
    'write_barrier',
    'zonemode',
    'mem',
    'description',
    'randrepeat',
    'invalidate',
    'flow',
    // engine-dependent (io_uring batches by it): named once its job's engine is known
    'iodepth_batch_submit',
  ]);
  t.is(parsed.jobs.length, 2);
  t.true(
    parsed.jobs.every((j) => j.filename === '/dev/nvme0n1'),
    'filename is read, not ignored',
  );
});

test('filename: the drive as the guest names it, /dev/nvme<X>n1, kept in the spec; any other form names filename, the value and the form', (t) => {
  t.is(jobsFromText('[j]\nsize=1m\nfilename=/dev/nvme3n1\n').jobs[0].filename, '/dev/nvme3n1');
  t.false('filename' in jobsFromText('[j]\nsize=1m\n').jobs[0], 'absent unless written');
  t.is(jobsFromCommandLine({ size: '1m' }, {}).jobs[0].filename, undefined);
  for (const bad of ['/dev/nvme0n2', '/dev/nvme0', '/dev/sda', '/tmp/file', '/dev/nvme01n1', '/dev/nvme0n1:/dev/nvme1n1', ''])
    inputError(t, () => jobsFromText(`[j]\nsize=1m\nfilename=${bad}\n`), '[j] filename', bad, '/dev/nvme<X>n1', 'one namespace');
  t.throws(() => validateJobSpec({ ...jobsFromText('[j]\nsize=1m\n').jobs[0], filename: '/dev/nvme0n2' }), { message: /^filename: / });
});

// --- every error: names the field, the value and what is allowed --------

test('bs=3000 names bs, 3000 and the allowed block sizes', (t) => {
  inputError(t, () => jobsFromText(oneJob('bs=3000')), '[job] bs', '3000', 'a multiple of 4096 bytes from 4096 to 2 MiB (e.g. 4k, 128k)');
  inputError(t, () => jobsFromText('[global]\nbs=512\n[job]\nsize=1m\n'), '[global] bs', '512', 'a multiple of 4096 bytes');
  inputError(t, () => jobsFromText(oneJob('bs=4m')), '[job] bs', '4m', 'to 2 MiB');
  inputError(t, () => jobsFromText(oneJob('bs=4k,8k,4k')), '[job] bs', '4k,8k,4k', 'trim is not modelled');
  inputError(t, () => jobsFromText(oneJob('bs=4k,6k')), '[job] bs', '4k,6k', 'a multiple of 4096 bytes');
  inputError(t, () => jobsFromText(oneJob('bs=big')), '[job] bs', 'big', 'a multiple of 4096 bytes');
});

test('block sizes per direction: bs=r,w, bsrange and bssplit (sizes without a share split the rest)', (t) => {
  const fixed = (bytes: number) => ({ minBytes: bytes, maxBytes: bytes, split: [] });
  t.like(jobsFromText(oneJob('bs=4k,8k')).jobs[0], { readBs: fixed(4096), writeBs: fixed(8192), blockSizeBytes: 8192 });
  t.like(jobsFromText(oneJob('bs=,16k')).jobs[0], { readBs: fixed(4096), writeBs: fixed(16384) });
  t.like(jobsFromText(oneJob('bs=64k')).jobs[0], { readBs: fixed(65536), writeBs: fixed(65536), blockSizeBytes: 65536 });
  t.like(jobsFromText(oneJob('bsrange=4k-64k,8k-8k')).jobs[0], {
    readBs: { minBytes: 4096, maxBytes: 65536, split: [] },
    writeBs: fixed(8192),
    blockSizeBytes: 65536,
  });
  t.deepEqual(jobsFromText(oneJob('bssplit=4k/10:64k/50:32k')).jobs[0].readBs, {
    minBytes: 4096,
    maxBytes: 65536,
    split: [
      { bytes: 4096, pct: 10 },
      { bytes: 65536, pct: 50 },
      { bytes: 32768, pct: 40 },
    ],
  });
  t.like(jobsFromText(oneJob('bs=128k\nbssplit=4k/50:8k/50')).jobs[0], { blockSizeBytes: 8192 }, 'bssplit over bs');
  inputError(t, () => jobsFromText(oneJob('bssplit=4k/60:8k/60')), '[job] bssplit', '4k/60:8k/60', 'adding up to 100');
  inputError(t, () => jobsFromText(oneJob('bsrange=4k')), '[job] bsrange', '4k', 'MIN-MAX');
});

test("fio's keywords: $pagesize, $mb_memory and $ncpus are the guest's, with bc's whole-number math", (t) => {
  const kw = { keywords: { pagesize: 4096, mb_memory: 2048, ncpus: 4 } };
  t.like(jobsFromText('[job]\nsize=$mb_memory*1024*1024/8\nnumjobs=$ncpus\nbs=$pagesize\n', kw).jobs[0], {
    sizeBytes: 256 * MiB,
    blockSizeBytes: 4096,
  });
  t.is(jobsFromText('[job]\nsize=1m\nnumjobs=$ncpus-1\n', kw).jobs.length, 3);
  t.is(jobsFromCommandLine({ size: '1m', numjobs: '($ncpus+2)/3' }, {}, kw.keywords).jobs.length, 2);
  t.is(expandFioKeywords('$mb_memory', kw.keywords), '2048');
  t.is(expandFioKeywords('8*$mb_memory', kw.keywords), '16384');
  t.is(expandFioKeywords('4-2', kw.keywords), '4-2', 'no keyword: no math (fio calls bc only after a substitution)');
});

test('ramp_time (s), thinktime (us), rate and rate_iops per direction are read', (t) => {
  t.like(jobsFromText(oneJob('ramp_time=2\nthinktime=100\nthinktime_spin=40\nthinktime_blocks=8\nrate=1m,2m\nrate_iops=500\nrate_min=,1k')).jobs[0], {
    rampTimeNs: 2e9,
    thinktimeNs: 100_000,
    thinktimeSpinNs: 40_000,
    thinktimeBlocks: 8,
    rate: { read: MiB, write: 2 * MiB },
    rateIops: { read: 500, write: 500 },
    rateMin: { read: 0, write: 1024 },
  });
  inputError(t, () => jobsFromText(oneJob('thinktime=10\nthinktime_spin=20')), '[job] thinktime_spin', '20', 'at most thinktime');
  inputError(t, () => jobsFromText(oneJob('rate_iops=fast')), '[job] rate_iops', 'fast', 'I/Os per second');
});

test('loops, io_size, number_ios and random_distribution are read', (t) => {
  t.like(jobsFromText(oneJob('loops=3\nio_size=128m\nnumber_ios=1000')).jobs[0], { loops: 3, ioSizeBytes: 128 * MiB, numberIos: 1000 });
  const dist = (v: string) => jobsFromText(oneJob(`rw=randread\nrandom_distribution=${v}`)).jobs[0].randomDistribution;
  t.deepEqual(dist('zipf:1.2'), { kind: 'zipf', theta: 1.2 });
  t.deepEqual(dist('pareto:0.9'), { kind: 'pareto', h: 0.9 });
  t.deepEqual(dist('normal:25'), { kind: 'normal', devPct: 25 });
  t.deepEqual(dist('zoned:60/10:30/20:8/30:2/40'), {
    kind: 'zoned',
    zones: [
      { accessPct: 60, sizePct: 10 },
      { accessPct: 30, sizePct: 20 },
      { accessPct: 8, sizePct: 30 },
      { accessPct: 2, sizePct: 40 },
    ],
  });
  inputError(t, () => jobsFromText(oneJob('random_distribution=zipf:1')), '[job] random_distribution', 'zipf:1', 'THETA > 0, not 1');
  inputError(t, () => jobsFromText(oneJob('random_distribution=zoned:50/10:40/90')), '[job] random_distribution', 'zoned:50/10:40/90', 'summing to 100');
  inputError(
    t,
    () => jobsFromText(oneJob('random_distribution=zoned_abs:60/20g:40/100g')),
    '[job] random_distribution',
    'zoned_abs:60/20g:40/100g',
    'not modelled',
  );
  inputError(t, () => jobsFromText(oneJob('loops=0')), '[job] loops', '0', 'a whole number >= 1');
});

test("bs=4KiB explains fio's kb_base=1024 reading (4000 bytes)", (t) => {
  inputError(t, () => jobsFromText(oneJob('bs=4KiB')), '[job] bs', '4KiB', '4KiB = 4000 bytes', 'kb_base=1000');
});

test('iodepth=0 and iodepth=5000 are errors', (t) => {
  inputError(t, () => jobsFromText(oneJob('iodepth=0')), '[job] iodepth', '0', 'a whole number from 1 to 4096');
  inputError(t, () => jobsFromText(oneJob('iodepth=5000')), '[job] iodepth', '5000', 'from 1 to 4096');
  inputError(t, () => jobsFromText(oneJob('iodepth=deep')), '[job] iodepth', 'deep', 'a whole number');
});

test('rw=sideways lists the allowed modes; trim and :N suffixes are refused', (t) => {
  inputError(t, () => jobsFromText(oneJob('rw=sideways')), '[job] rw', 'sideways', 'read, write, randread, randwrite, rw, randrw');
  inputError(t, () => jobsFromText(oneJob('rw=randtrim')), '[job] rw', 'randtrim', 'trim');
  inputError(t, () => jobsFromText(oneJob('rw=randread:8')), '[job] rw', 'randread:8', '":N" suffixes are not modelled');
});

test('direct: 0 by default as in fio (buffered, through the page cache); direct=1 and buffered=0 are O_DIRECT; a bare direct is an error', (t) => {
  t.false(jobsFromText(oneJob('')).jobs[0].direct);
  t.false(jobsFromText(oneJob('direct=0')).jobs[0].direct);
  t.false(jobsFromText(oneJob('buffered=1')).jobs[0].direct);
  t.true(jobsFromText(oneJob('direct=1')).jobs[0].direct);
  t.true(jobsFromText(oneJob('buffered=0')).jobs[0].direct);
  t.true(jobsFromText(oneJob('buffered=1\ndirect=1')).jobs[0].direct, 'the later of the two wins');
  inputError(t, () => jobsFromText(oneJob('direct')), '[job] direct', '', 'direct=0 or direct=1', 'fio requires a value for direct');
  inputError(t, () => jobsFromText(oneJob('direct=yes')), '[job] direct', 'yes', 'direct=0 or direct=1');
});

test('norandommap, fadvise_hint, end_fsync, fsync, fdatasync and invalidate are read', (t) => {
  t.like(jobsFromText(oneJob('')).jobs[0], { randomMap: true, fadviseHint: true, endFsync: false, fsyncEveryIos: 0, fdatasyncEveryIos: 0 });
  t.like(jobsFromText(oneJob('norandommap\nfadvise_hint=0\nend_fsync=1\nfsync=8\nfdatasync=16')).jobs[0], {
    randomMap: false,
    fadviseHint: false,
    endFsync: true,
    fsyncEveryIos: 8,
    fdatasyncEveryIos: 16,
  });
  t.true(jobsFromText(oneJob('norandommap=0')).jobs[0].randomMap);
  inputError(t, () => jobsFromText(oneJob('fadvise_hint=sequential')), '[job] fadvise_hint', 'sequential', 'not modelled');
  inputError(t, () => jobsFromText(oneJob('fsync=-1')), '[job] fsync', '-1', 'a whole number of writes');
  t.deepEqual(jobsFromText(oneJob('invalidate=1')).ignoredOptions, ['invalidate']);
  inputError(t, () => jobsFromText(oneJob('invalidate=0')), '[job] invalidate', '0', 'page cache starts empty');
});

test('ioengine: libaio (default), psync, pvsync, io_uring; anything else names ioengine and the engines modelled', (t) => {
  t.is(jobsFromText(oneJob('')).jobs[0].ioengine, 'libaio');
  for (const engine of ['libaio', 'psync', 'pvsync'] as const) {
    const job = jobsFromText(oneJob(`ioengine=${engine}\niodepth=16`)).jobs[0];
    t.like(job, { ioengine: engine, iodepth: 16 }, 'the spec keeps iodepth as written: fio prints it, and caps psync at run time');
    t.false('iodepthBatchSubmit' in job);
  }
  t.like(jobsFromText(oneJob('ioengine=io_uring\ndirect=1')).jobs[0], { ioengine: 'io_uring', iodepthBatchSubmit: 1, fixedBufs: false });
  inputError(t, () => jobsFromText(oneJob('ioengine=sync')), '[job] ioengine', 'sync', 'libaio, psync, pvsync or io_uring');
  inputError(t, () => jobsFromText(oneJob('ioengine=io_uring')), '[job] ioengine', 'io_uring', 'direct=1 only', 'io-wq');
});

test('io_uring options: iodepth_batch_submit and fixedbufs are read, the others refused with why, and none is taken by another engine', (t) => {
  const uring = (more: string) => jobsFromText(oneJob(`ioengine=io_uring\ndirect=1\niodepth=32\n${more}`));
  t.like(uring('iodepth_batch_submit=8\nfixedbufs').jobs[0], { iodepthBatchSubmit: 8, fixedBufs: true });
  t.like(uring('iodepth_batch=8\nfixedbufs=0').jobs[0], { iodepthBatchSubmit: 8, fixedBufs: false });
  // fio: 0, or more than iodepth, means iodepth
  t.like(uring('iodepth_batch_submit=0').jobs[0], { iodepthBatchSubmit: 32 });
  t.like(uring('iodepth_batch_submit=64').jobs[0], { iodepthBatchSubmit: 32 });
  t.deepEqual(uring('nonvectored=1\nhipri=0\nsqthread_poll=0\nregisterfiles=0').ignoredOptions, ['nonvectored']);
  inputError(t, () => uring('hipri'), '[job] hipri', '', 'hipri=0', 'NVMe poll queue');
  inputError(t, () => uring('sqthread_poll=1'), '[job] sqthread_poll', '1', 'a CPU of its own');
  inputError(t, () => uring('sqthread_poll_cpu=2'), '[job] sqthread_poll_cpu', '2', 'sqthread_poll is not modelled');
  inputError(t, () => uring('registerfiles'), '[job] registerfiles', '', 'no published measurement');
  inputError(t, () => uring('force_async=4'), '[job] force_async', '4', 'io-wq');
  inputError(t, () => uring('uncached=1'), '[job] uncached', '1', 'RWF_UNCACHED');
  inputError(t, () => uring('nonvectored=2'), '[job] nonvectored', '2', '-1 (detect), 0 or 1');
  inputError(t, () => uring('iodepth_batch_submit=x'), '[job] iodepth_batch_submit', 'x', 'I/Os per submit call');
  inputError(t, () => jobsFromText(oneJob('ioengine=libaio\nhipri')), '[job] hipri', '', 'an option of ioengine=io_uring', 'Bad option <hipri>');
  inputError(t, () => jobsFromText(oneJob('ioengine=psync\nfixedbufs')), '[job] fixedbufs', '', 'ioengine=psync');
  // one system call per I/O: the batch is ignored, as fio ignores it
  t.deepEqual(jobsFromText(oneJob('ioengine=psync\niodepth_batch_submit=4')).ignoredOptions, ['iodepth_batch_submit']);
  t.false('iodepthBatchSubmit' in jobsFromText(oneJob('ioengine=libaio\niodepth_batch=4')).jobs[0]);
});

test('an option that is not a fio option names it, and suggests a close one', (t) => {
  inputError(t, () => jobsFromText(oneJob('blocksise=4k')), '[job] blocksise', '4k', 'not a fio option (did you mean blocksize?)');
  const e = inputError(t, () => jobsFromText(oneJob('frobnicate=7')), '[job] frobnicate', '7', 'not a fio option');
  t.false(e.message.includes('did you mean'));
});

test('fio options the model cannot run are "not modelled", with the neutral value when there is one', (t) => {
  inputError(t, () => jobsFromText(oneJob('rate_process=poisson')), '[job] rate_process', 'poisson', 'rate_process is not modelled', 'set rate_process=linear');
  inputError(t, () => jobsFromText(oneJob('bs_unaligned=1')), '[job] bs_unaligned', '1', 'not modelled', 'multiples of 4 KiB');
  inputError(t, () => jobsFromText(oneJob('zonemode=zbd')), '[job] zonemode', 'zbd', 'set zonemode=none');
  inputError(t, () => jobsFromText(oneJob('write_barrier=1')), '[job] write_barrier', '1', 'barriers');
  inputError(t, () => jobsFromText(oneJob('latency_target=5ms')), '[job] latency_target', '5ms', 'latency_target is not modelled', 'set latency_target=0');
  inputError(t, () => jobsFromText(oneJob('fill_fs=1')), '[job] fill_fs', '1', 'remove it or set fill_fs=0;');
  inputError(t, () => jobsFromText(oneJob('exitall')), '[job] exitall', '', 'not modelled');
  inputError(t, () => jobsFromText(oneJob('percentage_sequential=10')), '[job] percentage_sequential', '10', 'deprecated');
});

test('a bad option in a trailing [global] is still reported', (t) => {
  inputError(t, () => jobsFromText('[job]\nsize=1m\n[global]\nrate_cycle=100\n'), '[global] rate_cycle', '100', 'not modelled');
});

test('size: required, at least one block, 4 KiB aligned, absolute', (t) => {
  // fio: "job: you need to specify size=" (filesetup.c), exit 1 there; an input error here
  inputError(t, () => jobsFromText('[job]\nbs=4k\n'), '[job] size', undefined, 'job: you need to specify size=');
  inputError(t, () => jobsFromCommandLine({ name: 'x', rw: 'read' }, { bs: '4k' }), '[x] size', undefined, 'x: you need to specify size=');
  // a block device gives its size, as in fio: the drive's, less the offset
  t.is(jobsFromText('[job]\nfilename=/dev/nvme0n1\n').jobs[0].sizeBytes, 125_026_902 * 4096);
  t.is(jobsFromText('[job]\nfilename=/dev/nvme0n1\noffset=1g\n').jobs[0].sizeBytes, 125_026_902 * 4096 - GiB);
  inputError(t, () => jobsFromText('[job]\nsize=64k\nbs=128k\n'), '[job] size', '64k', 'at least one block (bs = 131072 bytes)');
  inputError(t, () => jobsFromText('[job]\nsize=10000\n'), '[job] size', '10000', 'a multiple of 4096 bytes');
  // size=N%: that share of the drive, as fio takes it of the device, 4 KiB aligned, no more than lies past offset
  const drive = 125_026_902 * 4096;
  t.is(jobsFromText('[job]\nsize=50%\n').jobs[0].sizeBytes, Math.floor(drive / 2 / 4096) * 4096);
  t.is(jobsFromText('[job]\nsize=100%\noffset=1g\n').jobs[0].sizeBytes, drive - GiB);
  inputError(t, () => jobsFromText('[job]\nsize=0%\n'), '[job] size', '0%', 'a percentage of the drive');
  inputError(t, () => jobsFromText('[job]\nsize=1.5g\n'), '[job] size', '1.5g', 'a whole number of bytes');
});

test('offset and offset_increment must be 4 KiB aligned', (t) => {
  inputError(t, () => jobsFromText(oneJob('offset=1000')), '[job] offset', '1000', 'a multiple of 4096 bytes');
  inputError(t, () => jobsFromText(oneJob('numjobs=2\noffset_increment=100')), '[job] offset_increment', '100', 'a multiple of 4096 bytes');
});

test('runtime and time_based: bad times, time_based without runtime', (t) => {
  inputError(t, () => jobsFromText(oneJob('runtime=soon')), '[job] runtime', 'soon', 'a bare number is seconds');
  inputError(t, () => jobsFromText(oneJob('time_based')), '[job] time_based', '', 'runtime > 0');
  inputError(t, () => jobsFromText(oneJob('time_based\nruntime=0')), '[job] time_based', '', 'runtime > 0');
  t.is(jobsFromText(oneJob('runtime=0')).jobs[0].runtimeNs, null, 'runtime=0 means no limit, as in fio');
  t.false(jobsFromText(oneJob('time_based=0')).jobs[0].timeBased);
});

test('numjobs, rwmixread, verify, do_verify, randseed: out-of-range values', (t) => {
  inputError(t, () => jobsFromText(oneJob('numjobs=0')), '[job] numjobs', '0', 'a whole number from 1 to 4096');
  inputError(t, () => jobsFromText(oneJob('rwmixread=101')), '[job] rwmixread', '101', 'from 0 to 100');
  inputError(t, () => jobsFromText(oneJob('verify=sha512')), '[job] verify', 'sha512', 'crc32c', 'md5', 'not modelled');
  inputError(t, () => jobsFromText(oneJob('do_verify')), '[job] do_verify', '', 'do_verify=0 or do_verify=1');
  inputError(t, () => jobsFromText(oneJob('randseed=-1')), '[job] randseed', '-1', 'a whole number from 0');
  inputError(t, () => jobsFromText(oneJob('stonewall=maybe')), '[job] stonewall', 'maybe', 'the bare key stonewall');
});

test('two job sections with one name, or no job section at all, are errors', (t) => {
  inputError(t, () => jobsFromText('[a]\nsize=1m\n[a]\nsize=2m\n'), '[a]', 'a', 'a job name used by one section only');
  inputError(t, () => jobsFromText('[global]\nsize=1m\n'), 'job file', 'test.fio', 'at least one job section besides [global]');
});

// --- sizes and times ----------------------------------------------------

test('parseSizeBytes follows fio: k/m/g powers of 1024, kib powers of 1000 (kb_base=1024), b = bytes, 0x hex', (t) => {
  const cases: [string, number][] = [
    ['4096', 4096],
    ['4k', 4096],
    ['4K', 4096],
    ['4kb', 4096],
    ['4KB', 4096],
    ['4096b', 4096],
    ['64m', 64 * MiB],
    ['1g', GiB],
    ['1t', 1024 * GiB],
    ['1p', 1024 * 1024 * GiB],
    ['4kib', 4000],
    ['1MiB', 1_000_000],
    ['1GiB', 1e9],
    ['0x1000', 4096],
    [' 8k ', 8192],
  ];
  for (const [text, bytes] of cases) t.is(parseSizeBytes('size', text), bytes, text);
  t.is(parseSizeBytes('size', '4k', 1000), 4000);
  t.is(parseSizeBytes('size', '4KiB', 1000), 4096);
});

test('parseSizeBytes refuses what fio would silently misread', (t) => {
  for (const text of ['', '1.5m', '4 k', '-4k', '4x', '4mi', '4kk', 'k', '0x', '1e6']) {
    inputError(t, () => parseSizeBytes('bs', text), 'bs', text, 'a whole number of bytes with an optional suffix');
  }
  inputError(t, () => parseSizeBytes('size', '99999999p'), 'size', '99999999p', 'at most');
});

test('parseTimeNs: a bare number is seconds; us/ms/s/m/h/d', (t) => {
  const cases: [string, number][] = [
    ['10', 10e9],
    ['10s', 10e9],
    ['10sec', 10e9],
    ['500ms', 500e6],
    ['500msec', 500e6],
    ['250us', 250e3],
    ['250usec', 250e3],
    ['2m', 120e9],
    ['1h', 3600e9],
    ['1d', 86400e9],
    ['10S', 10e9],
    ['0', 0],
  ];
  for (const [text, ns] of cases) t.is(parseTimeNs('runtime', text), ns, text);
  for (const text of ['', '1.5s', '10 s', '10min', 'ten', '-1', '5ns']) {
    inputError(t, () => parseTimeNs('runtime', text), 'runtime', text, 'a bare number is seconds');
  }
});

test('parseCount: decimal or 0x hex whole numbers only', (t) => {
  t.is(parseCount('iodepth', '32', 'x'), 32);
  t.is(parseCount('randseed', '0x89', 'x'), 0x89);
  inputError(t, () => parseCount('iodepth', '3.5', 'a whole number'), 'iodepth', '3.5', 'a whole number');
});

// --- the option table and the spec validator ----------------------------

test('the option table: every alias points at a row; the options named in the brief are where the brief put them', (t) => {
  for (const [alias, target] of Object.entries(FIO_OPTION_ALIASES)) {
    t.truthy(FIO_OPTION_TABLE[target], `${alias} -> ${target}`);
    t.falsy(FIO_OPTION_TABLE[alias], `${alias} is not also a row`);
  }
  const kind = (name: string): string | undefined => FIO_OPTION_TABLE[FIO_OPTION_ALIASES[name] ?? name]?.kind;
  for (const name of [
    'rw',
    'bs',
    'size',
    'runtime',
    'rwmixread',
    'verify',
    'do_verify',
    'offset',
    'randseed',
    'numjobs',
    'stonewall',
    'new_group',
    'time_based',
    'direct',
    'ioengine',
  ]) {
    t.is(kind(name), 'handled', name);
  }
  for (const name of ['name', 'description', 'filename', 'directory', 'thread', 'group_reporting', 'norandommap', 'randrepeat', 'iodepth_batch']) {
    t.true(kind(name) === 'ignored' || kind(name) === 'handled', name);
  }
  for (const name of ['rate_process', 'zonemode', 'invalidate', 'latency_target']) t.is(kind(name), 'notModelled', name);
  for (const name of ['rate', 'rate_iops', 'rate_min', 'rate_iops_min', 'thinktime', 'ramp_time']) t.is(kind(name), 'handled', name);
  for (const name of ['bssplit', 'bsrange', 'loops', 'io_size', 'number_ios', 'random_distribution']) t.is(kind(name), 'handled', name);
  for (const name of ['fsync', 'fdatasync', 'end_fsync', 'fadvise_hint']) t.is(kind(name), 'handled', name);
});

const VALID: FioJobSpec = jobsFromCommandLine({ size: '64m' }).jobs[0];

test('validateJobSpec accepts a parsed spec and rejects each broken field by its fio name', (t) => {
  t.is(validateJobSpec(VALID), VALID);
  const broken: [Partial<FioJobSpec>, string][] = [
    [{ blockSizeBytes: 6144 }, 'bs'],
    [{ sizeBytes: 2048 }, 'size'],
    [{ offsetBytes: 512 }, 'offset'],
    [{ iodepth: 0 }, 'iodepth'],
    [{ iodepth: 1.5 }, 'iodepth'],
    [{ runtimeNs: 0 }, 'runtime'],
    [{ timeBased: true, runtimeNs: null }, 'time_based'],
    [{ rw: 'trim' as never }, 'rw'],
    [{ rwmixreadPct: 101 }, 'rwmixread'],
    [{ verify: 'sha512' as never }, 'verify'],
    [{ randseed: -1 }, 'randseed'],
    [{ ioengine: 'io_uring' as never }, 'ioengine'],
    [{ ioengine: 'sync' as never, direct: true }, 'ioengine'],
    [{ iodepthBatchSubmit: 2 }, 'iodepth_batch_submit'],
    [{ ioengine: 'io_uring', direct: true, iodepthBatchSubmit: 0 }, 'iodepth_batch_submit'],
    [{ fixedBufs: true }, 'fixedbufs'],
    [{ direct: 0 as never }, 'direct'],
    [{ randomMap: 1 as never }, 'norandommap'],
    [{ fsyncEveryIos: -1 }, 'fsync'],
    [{ name: '' }, 'name'],
  ];
  for (const [patch, field] of broken) {
    const e = t.throws(() => validateJobSpec({ ...VALID, ...patch }), { instanceOf: InputError }, field);
    t.is(e.field, field);
  }
  const e = t.throws(() => validateJobSpec({ ...VALID, blockSizeBytes: 3000 }, { blockSizeBytes: { field: '--bs', value: '3000' } }), {
    instanceOf: InputError,
  });
  t.is(
    e.message,
    '--bs: "3000" is not allowed; a multiple of 4096 bytes from 4096 to 2 MiB (e.g. 4k, 128k); the model\'s NVMe namespace has 4 KiB logical blocks',
  );
});

test('jobs of one group writing into a region another verifies: one warning line naming both and the way out', async (t) => {
  const { overlappingVerifyWarning } = await import('../src/commands/run.js');
  const clones = jobsFromCommandLine({ name: 'w', rw: 'randwrite', size: '1m', numjobs: '2', verify: 'crc32c' }, {}).jobs;
  t.regex(
    overlappingVerifyWarning(clones) ?? '',
    /^job 'w' #1 writes into the region job 'w' #0 verifies \(\[0, 1m\) of the drive, barrier group 0\): .*offset_increment=1m/,
  );
  const apart = jobsFromCommandLine({ name: 'w', rw: 'randwrite', size: '1m', numjobs: '2', verify: 'crc32c', offset_increment: '1m' }, {}).jobs;
  t.is(overlappingVerifyWarning(apart), null, 'disjoint regions');
  const noVerify = jobsFromCommandLine({ name: 'w', rw: 'randwrite', size: '1m', numjobs: '2' }, {}).jobs;
  t.is(overlappingVerifyWarning(noVerify), null, 'nothing verifies');
  const readers = jobsFromCommandLine({ name: 'r', rw: 'randread', size: '1m', numjobs: '2', verify: 'crc32c' }, {}).jobs;
  t.is(overlappingVerifyWarning(readers), null, 'readers only: nobody writes');
});
