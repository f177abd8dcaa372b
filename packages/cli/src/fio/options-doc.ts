/**
 * docs/fio-options.md, generated: every option fio 3.33 knows
 * (fio-3.33-options.ts) with what the model does with it, read from
 * `FIO_OPTION_TABLE` (options.ts): works, refused (the table's reason, and
 * the values accepted as off) or ignored (with the note below). Written by
 * `node scripts/gen-fio-options-doc.mjs`; packages/cli/test/fio-options-doc.test.ts
 * fails when the file is not what this prints.
 */

import { FIO_3_33_ENGINE_OPTIONS, FIO_3_33_OPTIONS } from './fio-3.33-options.js';
import { FIO_OPTION_ALIASES, FIO_OPTION_TABLE, IO_URING_REFUSED, type OptionRule } from './options.js';

const FILES = "the job's file is its region of an NVMe namespace (filename=/dev/nvme<X>n1 names the drive): nothing to create, lay out or remove";
const RANDOM = 'every job draws from its own generator, seeded from randseed and its job number: runs repeat';
const BATCH = 'the engine submits one I/O per free slot and reaps each completion; doorbell and interrupt batching come from the device model';
const CONTENTS = 'buffer contents cost nothing in the model, and the drive model neither compresses nor dedupes';
const OS = 'only matters to a real OS: each job runs alone on its own vCPU';
const CLOCK = 'model time is the clock';
const REPORT = "not read: the report prints fio's default set";
const ERRORS = 'not read: a job goes on after an I/O error or a verify failure (fio stops the job unless continue_on_error says otherwise)';

/** Why an ignored option changes nothing, or what the model does instead; options without a note here: "changes nothing the model does". */
export const FIO_IGNORED_NOTES: Readonly<Record<string, string>> = {
  description: 'text only',
  directory: FILES,
  filename_format: FILES,
  unique_filename: FILES,
  openfiles: FILES,
  create_serialize: FILES,
  create_fsync: FILES,
  create_on_open: FILES,
  allow_file_create: FILES,
  allow_mounted_write: FILES,
  overwrite: FILES,
  fallocate: FILES,
  unlink: FILES,
  unlink_each_loop: FILES,
  thread: 'every job is a thread in the model (a vCPU worker); "Starting N threads" is printed as fio does',
  softrandommap: RANDOM,
  randrepeat: RANDOM,
  allrandrepeat: RANDOM,
  random_generator: RANDOM,
  iodepth_batch_complete_min: BATCH,
  iodepth_batch_complete_max: BATCH,
  iodepth_low: BATCH,
  userspace_reap: BATCH,
  zero_buffers: CONTENTS,
  refill_buffers: CONTENTS,
  scramble_buffers: CONTENTS,
  buffer_pattern: CONTENTS,
  buffer_compress_percentage: CONTENTS,
  buffer_compress_chunk: CONTENTS,
  dedupe_percentage: CONTENTS,
  dedupe_global: CONTENTS,
  dedupe_mode: CONTENTS,
  dedupe_working_set_percentage: CONTENTS,
  'hugepage-size': 'buffer layout is --buffer_contiguity (none or huge)',
  lockmem: OS,
  nice: OS,
  cpumask: OS,
  cpus_allowed: OS,
  cpus_allowed_policy: OS,
  numa_cpu_nodes: OS,
  numa_mem_policy: OS,
  gpu_dev_id: OS,
  uid: OS,
  gid: OS,
  cgroup: OS,
  cgroup_nodelete: OS,
  clocksource: CLOCK,
  gtod_reduce: CLOCK,
  gtod_cpu: CLOCK,
  unified_rw_reporting: REPORT,
  stats: REPORT,
  clat_percentiles: REPORT,
  lat_percentiles: REPORT,
  slat_percentiles: REPORT,
  percentile_list: REPORT,
  significant_figures: REPORT,
  disable_lat: REPORT,
  disable_clat: REPORT,
  disable_slat: REPORT,
  disable_bw_measurement: REPORT,
  disk_util: REPORT,
  unit_base: REPORT,
  write_iolog: 'not written',
  log_entries: 'logs grow as needed',
  log_compression: 'compressed in memory, written out plain: the files are the same',
  log_compression_cpus: 'compressed in memory, written out plain: the files are the same',
  block_error_percentiles: 'the model has no trim: nothing to report',
  continue_on_error: ERRORS,
  ignore_error: ERRORS,
  error_dump: ERRORS,
  exitall_on_error: ERRORS,
  exit_what: ERRORS,
  verify_dump: 'no dump files are written',
  verify_state_save: 'no verify state files are written',
  verifysort: 'deprecated in fio: accepted, no effect',
  verifysort_nr: 'deprecated in fio: accepted, no effect',
  flow_watermark: 'flow control (flow) is refused',
};

/** What a handled option does beyond what fio's manual says, where the model narrows it. */
export const FIO_HANDLED_NOTES: Readonly<Record<string, string>> = {
  filename:
    '/dev/nvme<X>n1: the drive of the VM the job does I/O to (without it job i goes to drive i mod --devices); a list a:b: ' +
    'one job over several files, equal parts of its region on its drive (a list naming drives is refused: a job drives one)',
  nrfiles: "without filename, the job's region in N equal files, taken in turn",
  file_service_type: 'roundrobin (the default: one I/O from each file in turn); any other value is refused when the job has several files',
  ioengine: "the engine's submission path in the guest; default libaio (any value the model does not run is refused, naming those it does)",
  direct: '0 (default): buffered, through the guest page cache; 1: O_DIRECT',
  verify: 'crc32c, md5, sha1, sha256, xxhash, meta, pattern; data no job wrote fails it (err=84), as in fio',
  size: 'bytes, or N% of the drive; a job needs one (or filename=/dev/nvme<X>n1)',
  group_reporting: "the report joins the group's jobs as fio does",
  fixedbufs: 'ioengine=io_uring: registered buffers, pinned once (no get_user_pages per I/O); the DMA mapping stays per I/O',
  nonvectored: 'ioengine=io_uring: accepted; IORING_OP_READ and READV cost the same in the model',
  iodepth_batch:
    'ioengine=io_uring: SQEs per io_uring_enter (iodepth_batch_submit; 0 or above iodepth means iodepth); accepted with no effect on libaio, psync, pvsync',
};

/** One option's row: what the model does with it, and why. */
export function fioOptionStatus(name: string): { status: string; why: string } {
  const canonical = FIO_OPTION_ALIASES[name] ?? name;
  const rule: OptionRule | undefined = FIO_OPTION_TABLE[canonical];
  const alias = canonical === name ? '' : `alias of ${canonical}; `;
  if (!rule) return { status: 'refused', why: `${alias}not in the option table: refused as an unknown option` };
  const uringReason = (IO_URING_REFUSED as Readonly<Record<string, string>>)[canonical];
  if (uringReason !== undefined) {
    const off = canonical === 'sqthread_poll_cpu' ? '' : ' (accepted, as off, with `0`)';
    return { status: 'refused', why: `${alias}an ioengine=io_uring option: ${uringReason}${off}` };
  }
  switch (rule.kind) {
    case 'handled':
      return { status: 'works', why: alias + (FIO_HANDLED_NOTES[canonical] ?? '') };
    case 'ignored':
      return { status: 'ignored', why: alias + (FIO_IGNORED_NOTES[canonical] ?? 'changes nothing the model does') };
    case 'deprecated':
      return { status: 'refused', why: `${alias}deprecated: fio 3.33 refuses it too` };
    case 'notModelled': {
      const off = rule.neutral && rule.neutral.length > 0 ? ` (accepted, as off, with ${rule.neutral.map((v) => `\`${v}\``).join(' or ')})` : '';
      return { status: 'refused', why: `${alias}${rule.reason}${off}` };
    }
  }
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function rows(names: readonly string[]): string {
  return names
    .map((n) => {
      const s = fioOptionStatus(n);
      return `| \`${n}\` | ${s.status} | ${cell(s.why)} |`;
    })
    .join('\n');
}

/** docs/fio-options.md. */
export function formatFioOptionsDoc(): string {
  const general = [...new Set(FIO_3_33_OPTIONS)];
  const engine = [...new Set(Object.values(FIO_3_33_ENGINE_OPTIONS).flat())].filter((n) => !general.includes(n));
  const listed = new Set([...general, ...engine]);
  const others = Object.keys(FIO_OPTION_TABLE).filter((n) => !listed.has(n));
  const count = (names: readonly string[], status: string) => names.filter((n) => fioOptionStatus(n).status === status).length;
  const all = [...general, ...engine];
  const head = [
    '# fio options in vmstack',
    '',
    '<!-- generated by `node scripts/gen-fio-options-doc.mjs` from FIO_OPTION_TABLE (packages/cli/src/fio/options.ts); do not edit -->',
    '',
    'Every option fio 3.33 knows (`fio --cmdhelp=all`, and the libaio and io_uring engine options from `fio --enghelp=…`), with what `vmstack run` does with it:',
    '',
    '- **works**: read and modelled;',
    '- **refused**: would change the workload in a way the model does not follow: exit 2 and one line naming the option, the value and the reason;',
    '  where the row names values accepted as off, those values are accepted and ignored;',
    '- **ignored**: accepted, listed in one warning line before the run (`ignoring options that do not change the model: …`); the note says why.',
    '',
    `fio 3.33: ${all.length} options; ${count(all, 'works')} work, ${count(all, 'refused')} are refused, ${count(all, 'ignored')} are ignored.`,
    'A name fio does not know is refused with fio\'s suggestion ("did you mean iodepth?").',
    '',
    '## General options (`fio --cmdhelp=all`, in its order)',
    '',
    '| option | vmstack | why |',
    '|---|---|---|',
    rows(general),
    '',
    '## Engine options (`fio --enghelp=libaio`, `fio --enghelp=io_uring`)',
    '',
    '| option | vmstack | why |',
    '|---|---|---|',
    rows(engine),
    '',
  ];
  if (others.length > 0)
    head.push(
      '## In the option table, not listed by this fio 3.33 build',
      '',
      'Options of other builds or engines (cuda, fdp, …) and deprecated ones, read as the table says:',
      '',
      '| option | vmstack | why |',
      '|---|---|---|',
      rows(others),
      '',
    );
  head.push('## Aliases', '', '| alias | option |', '|---|---|', ...Object.entries(FIO_OPTION_ALIASES).map(([a, o]) => `| \`${a}\` | \`${o}\` |`), '');
  return head.join('\n');
}
