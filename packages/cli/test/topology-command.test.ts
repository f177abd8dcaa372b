/**
 * `vmstack topology` and the topology options of `vmstack run`, spawned as
 * users script them: the tree and the "not runnable yet" line, the JSON that
 * `--topology FILE` reads back, bad topology input as one line and exit 2,
 * and a run given a topology carrying it in its report and HTML.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { oneInputErrorLine, vmstack } from './helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'vmstack-topology-cli-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(tmp, name);
  writeFileSync(path, text);
  return path;
}

const SHAPE = ['--vms', '2', '--devices', '2', '--viommus', '2'];

test('topology, default shape: the tree of one VM, its 4 workers, and no "not runnable" line', async (t) => {
  const r = await vmstack(['topology']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  const lines = r.stdout.trimEnd().split('\n');
  t.is(lines[0], 'platform: vm');
  t.true(lines.includes('└─ vm0: strategy strict, driver v5.10, RAM 512 MiB'), r.stdout);
  t.is(lines.at(-1), 'workers: 4 of 64 slots');
  t.false(r.stdout.includes('not runnable'));
});

test('topology of a shape the planner cannot run yet: the tree, then one line saying why, exit 0', async (t) => {
  // two jobs on one vCPU: a vCPU worker runs one fio job
  const r = await vmstack(['topology', ...SHAPE, '--numjobs', '2', '--vcpus', '1']);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  t.is(lines[0], 'platform: vm');
  t.is(lines.at(-2), 'workers: 14 of 64 slots');
  t.regex(lines.at(-1) ?? '', /^not runnable yet: topology\.vms\[0\]\./);
});

test('topology --output-format json reads back through --topology FILE: the same JSON and the same tree', async (t) => {
  const json = await vmstack(['topology', ...SHAPE, '--strategy', 'bounce', '--untrusted', '--output-format', 'json']);
  t.is(json.code, 0, json.stderr);
  t.false(json.stdout.includes('not runnable'), 'a note on the shape goes to stderr: stdout is the topology alone');
  const topology = JSON.parse(json.stdout) as { platform: string; vms: { strategy: string; devices: { untrusted: boolean }[] }[] };
  t.is(topology.vms.length, 2);
  t.is(topology.vms[1].strategy, 'bounce');
  t.true(topology.vms[1].devices[1].untrusted);
  const path = file('shape.json', json.stdout);
  const [again, tree, treeFromFile] = await Promise.all([
    vmstack(['topology', '--topology', path, '--output-format', 'json']),
    vmstack(['topology', ...SHAPE, '--strategy', 'bounce', '--untrusted']),
    vmstack(['topology', '--topology', path]),
  ]);
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout, json.stdout);
  t.is(treeFromFile.code, 0, treeFromFile.stderr);
  t.is(treeFromFile.stdout, tree.stdout);
  t.true(tree.stdout.includes("job 1 'vmstack' (read, bs 4k, iodepth 1) → nvme2"), 'the file placed the one fio job once per VM, as --vms does');
});

const fifo = join(tmp, 'shape.fifo');
execFileSync('mkfifo', [fifo]);
const goodFile = file('default.json', '{"platform":"vm","vms":[]}');
const badJson = file('bad.json', '{\n  "platform": "vm",\n  "vms": [,]\n}\n');
const twoGroups = file('two-groups.fio', '[a]\nsize=64k\n[b]\nsize=64k\nstonewall\n');

/** [title, args, what the one line must contain] */
const BAD_INPUTS: [string, string[], string[]][] = [
  ['run --vms 0', ['run', '--vms', '0'], ['--vms', '"0"', 'from 1 to 64']],
  ['topology --devices x', ['topology', '--devices', 'x'], ['--devices', '"x"', 'whole number']],
  ['run --container nope', ['run', '--container', 'nope'], ['--container', '"nope"', 'shared, per-device']],
  ['run --platform xen', ['run', '--platform', 'xen'], ['--platform', '"xen"', 'vm, bare-metal']],
  ['run --viommus beyond --devices', ['run', '--viommus', '2'], ['--viommus', '"2"', 'at most --devices']],
  ['run --iommu-units beyond the controllers', ['run', '--iommu-units', '2'], ['--iommu-units', '"2"', 'controllers']],
  ['bare metal with a virtio-iommu', ['run', '--platform', 'bare-metal', '--viommus', '1'], ['--viommus', 'only with --platform vm']],
  ['more workers than slots', ['topology', '--vms', '16', '--vcpus', '4'], ['--vms', '"16"', 'at most 64 workers']],
  ['a flag with --topology', ['run', '--vms', '2', '--topology', goodFile], ['--vms', '"2"', 'not together with --topology FILE']],
  ['--strategy with --topology', ['topology', '--topology', goodFile, '--strategy', 'lazy'], ['--strategy', '"lazy"', 'not together']],
  ['--topology FIFO', ['run', '--topology', fifo], ['--topology', fifo, 'FIFO']],
  ['--topology directory', ['topology', '--topology', tmp], ['--topology', 'a directory']],
  ['--topology missing', ['run', '--topology', join(tmp, 'none.json')], ['--topology', 'none.json', 'ENOENT']],
  ['--topology bad JSON', ['run', '--topology', badJson], ['--topology', 'bad.json', 'line 3, column 11']],
  ['--topology invalid', ['run', '--topology', goodFile], ['topology.controllers', 'a list of at least 1']],
  ['--topology with two barrier groups', ['run', twoGroups, '--topology', goodFile], ['--topology', '2 stonewall groups']],
  ['filename beyond the devices', ['run', '--filename', '/dev/nvme1n1', '--size', '64k'], ['[vmstack] filename', '/dev/nvme1n1', '/dev/nvme0n1']],
  ['filename of another form', ['run', '--filename', '/tmp/x', '--size', '64k'], ['--filename', '"/tmp/x"', '/dev/nvme<X>n1']],
  ['a shape the planner cannot run', ['run', '--numjobs', '2', '--vcpus', '1', '--size', '64k'], ['topology.vms[0].vcpus[0]', 'exactly 1 job on each vCPU']],
];

for (const [title, args, mentions] of BAD_INPUTS) {
  test(`bad topology input, one line and exit 2: ${title}`, async (t) => {
    const r = await vmstack(args);
    const line = oneInputErrorLine(r);
    t.regex(line, /^vmstack: /, line);
    t.is(r.stdout, '');
    for (const m of mentions) t.true(line.includes(m), `"${line}" should mention ${m}`);
  });
}

test('run given a topology (--vms 1): the same numbers as without, the topology in the report (snake_case) and in the HTML', async (t) => {
  const html = join(tmp, 'run.html');
  const [plain, shaped] = await Promise.all([
    vmstack(['run', '--size', '256k', '--output-format', 'json']),
    vmstack(['run', '--size', '256k', '--output-format', 'json', '--vms', '1', '--html', html]),
  ]);
  t.is(plain.code, 0, plain.stderr);
  t.is(shaped.code, 0, shaped.stderr);
  const a = JSON.parse(plain.stdout) as { jobs: { read: unknown }[]; vmstack: Record<string, unknown> };
  const b = JSON.parse(shaped.stdout) as { jobs: { read: unknown }[]; vmstack: Record<string, unknown> };
  t.false('topology' in a.vmstack, 'the default run reports as before');
  t.deepEqual(b.jobs[0].read, a.jobs[0].read);
  t.deepEqual(b.vmstack.counters, a.vmstack.counters);
  const top = b.vmstack.topology as { platform: string; host_iommus: unknown; vms: { ram_bytes: number; devices: { endpoint_id: number }[] }[] };
  t.is(top.platform, 'vm');
  t.deepEqual(top.host_iommus, [{ id: 'dmar0', controllers: ['nvme-ctrl0'] }]);
  t.is(top.vms[0].ram_bytes, 512 * 1024 * 1024);
  t.is(top.vms[0].devices[0].endpoint_id, 0x100);
  const page = readFileSync(html, 'utf8');
  t.regex(page, /<h2>Topology<\/h2>/);
  t.regex(page, /<ul class="topology"><li>platform: vm<ul><li>vm0: strategy strict/);
  t.regex(page, /\[worker nvme-device\/nvme-ctrl0\]/);
  t.regex(page, /<h2>Jobs<\/h2>/);
});
