/**
 * `vmstack attack`: the NVMe device, as an attacker, tries after-unmap reads
 * and writes, writes into read-only mappings, the bytes beside its buffers
 * and a pass over IOVAs it was never given, while a small fio workload runs.
 * Strict and the pool must reach none of the planted secret; strict, whose
 * unmap returns only once the invalidation reached the IOTLB, must allow no
 * access after an unmap at any of the tried moments; with no IOMMU the
 * device reaches the secret; lazy leaves the unmapped buffer readable for a
 * while (behind virtio-iommu its UNMAP waits in the queue for the next sync;
 * on bare metal the page table is cleared at once and a stale IOTLB entry
 * serves until the flush queue's flush). The attacker's writes store what is
 * there: the workload's verify finds nothing corrupt.
 */

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AttackReport, type AttackRow, runAttack } from '@vmstack/cli';
import type { DmaStrategy } from '@vmstack/guest-kernel';
import { DEFAULT_QUANTUM_NS, releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const cli = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'vmstack-attack-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const DELAYS_NS = [0, 300, 1000, 3000, 10_000, 100_000, 1_000_000];

function attack(configs: { strategy: DmaStrategy; untrusted: boolean }[], platform?: 'bare-metal'): Promise<AttackReport> {
  return runAttack({
    configs,
    runArgs: {
      fio: { rw: 'randrw', bs: '4k', iodepth: '4', size: '256k', verify: 'crc32c', direct: '1' },
      strategy: 'strict',
      clock: 'virtual',
      quantumNs: DEFAULT_QUANTUM_NS,
      driver: 'v5.10',
      bufferContiguity: 'none',
      guestRam: '128m',
      untrusted: false,
      outputFormat: 'normal',
      ...(platform ? { topology: { platform } } : {}),
    },
    attack: { delaysNs: DELAYS_NS, sampleEvery: 2, secretPages: 16, scanAfterCommands: 16, neighbourBytes: 64 },
  });
}

const rowOf = (r: AttackReport, strategy: DmaStrategy, trust: 'trusted' | 'untrusted'): AttackRow =>
  r.rows.find((x) => x.strategy === strategy && x.trust === trust)!;

const vm = attack([
  { strategy: 'direct', untrusted: false },
  { strategy: 'strict', untrusted: false },
  { strategy: 'strict', untrusted: true },
  { strategy: 'lazy', untrusted: false },
  { strategy: 'bounce', untrusted: false },
  { strategy: 'bounce', untrusted: true },
]);

test('every row tried every kind of access, and the workload verified clean', async (t) => {
  const r = await vm;
  for (const row of r.rows) {
    t.true(row.ios > 0, `${row.strategy} ${row.trust}: the workload ran`);
    t.is(row.verify_corrupt, 0, `${row.strategy} ${row.trust}: the attacker's writes store what is there`);
    for (const [kind, s] of Object.entries(row.kinds)) t.true(s.attempts > 0, `${row.strategy} ${row.trust}: ${kind} tried`);
    t.is(row.attempts, row.faults + row.successes);
    t.true(row.stale_window.unmaps_probed > 0);
    t.is(row.dropped_log_entries, 0);
  }
});

test('strict and the pool reach no secret byte; strict allows no access after an unmap, at any tried delay', async (t) => {
  const r = await vm;
  for (const trust of ['trusted', 'untrusted'] as const) {
    const strict = rowOf(r, 'strict', trust);
    t.is(strict.secret_bytes, 0, `strict ${trust}`);
    t.true(strict.after_unmap.attempts > 0);
    t.is(strict.after_unmap.successes, 0, `strict ${trust}: after-unmap accesses`);
    t.is(strict.after_unmap.stale_iotlb, 0);
    t.is(strict.stale_window.usable_after_unmap, 0);
    t.is(strict.kinds['read-only-write'].successes, 0, 'a write into a read-only mapping faults');
    const bounce = rowOf(r, 'bounce', trust);
    t.is(bounce.secret_bytes, 0, `bounce ${trust}`);
    t.is(bounce.kinds['read-only-write'].successes, 0);
  }
});

test('the pool: a released slot stays mapped, so what the device reaches after an unmap is bounce memory it saw before', async (t) => {
  const bounce = rowOf(await vm, 'bounce', 'trusted');
  t.true(bounce.after_unmap.successes > 0);
  t.is(bounce.after_unmap.stale_iotlb, 0, 'through the host mapping the pool keeps');
  t.true(bounce.seen_bytes > 0);
});

test('with no IOMMU translation the device reaches the planted secret and writes into read-only buffers', async (t) => {
  const direct = rowOf(await vm, 'direct', 'trusted');
  t.true(direct.secret_bytes >= 16 * 4096, `${direct.secret_bytes} secret bytes: the pass over guest RAM finds every secret page`);
  t.true(direct.kinds['never-mapped'].secret_bytes > 0);
  t.is(direct.kinds['read-only-write'].faults, 0);
  t.is(direct.faults, 0);
});

test('lazy in a VM: an unmapped buffer stays readable through the host mapping until the UNMAP is sent', async (t) => {
  const lazy = rowOf(await vm, 'lazy', 'trusted');
  t.is(lazy.secret_bytes, 0);
  t.true(lazy.after_unmap.successes > 0);
  t.true(lazy.after_unmap.host_mapped > 0);
  t.true(lazy.stale_window.max_us! > 0, 'a nonzero window');
  t.true(lazy.stale_window.max_us! < 10_000, 'closed by the next sync, well before the flush queue timeout');
});

test('bare metal: lazy leaves stale IOTLB entries usable after the unmap; strict none', async (t) => {
  const r = await attack(
    [
      { strategy: 'strict', untrusted: false },
      { strategy: 'lazy', untrusted: false },
    ],
    'bare-metal',
  );
  const strict = rowOf(r, 'strict', 'trusted');
  t.is(strict.after_unmap.successes, 0);
  t.is(strict.secret_bytes, 0);
  const lazy = rowOf(r, 'lazy', 'trusted');
  t.true(lazy.after_unmap.stale_iotlb > 0, 'only a stale IOTLB entry allowed them: the page table was cleared');
  t.true(lazy.stale_window.max_us! > 0);
  t.is(lazy.secret_bytes, 0);
});

test('vmstack attack --output-format json: the report parses back, with an HTML table beside it', async (t) => {
  const out = join(tmp, 'attack.json');
  const html = join(tmp, 'attack.html');
  const args = ['attack', '--strategies', 'strict', '--trust', 'trusted', '--size', '128k', '--delays', '0ns,1us,1ms', '--output-format', 'json'];
  const code = await new Promise<number>((resolve) =>
    execFile(process.execPath, [cli, ...args, '--output', out, '--html', html], { timeout: 120_000 }, (err) =>
      resolve(err ? Number((err as { code?: number }).code ?? -1) : 0),
    ),
  );
  t.is(code, 0);
  const r = JSON.parse(readFileSync(out, 'utf8')) as AttackReport;
  t.deepEqual(r.delays_us, [0, 1, 1000]);
  t.is(r.rows.length, 1);
  const row = r.rows[0];
  t.is(row.strategy, 'strict');
  t.is(row.trust, 'trusted');
  for (const k of ['attempts', 'faults', 'successes', 'secret_bytes', 'seen_bytes', 'other_bytes', 'ios'] as const) t.is(typeof row[k], 'number', k);
  t.deepEqual(Object.keys(row.kinds).sort(), ['after-unmap-read', 'after-unmap-write', 'neighbour', 'never-mapped', 'read-only-write']);
  t.is(row.secret_bytes, 0);
  const page = readFileSync(html, 'utf8');
  t.true(page.startsWith('<!doctype html>'));
  t.true(page.includes('<table>') && page.includes('secret B'));
});

test('vmstack attack: bad input is refused by name', async (t) => {
  for (const [args, field] of [
    [['--delays', '5us,1us'], '--delays'],
    [['--trust', 'sometimes'], '--trust'],
    [['--strategies', 'strict,none'], '--strategies'],
  ] as const) {
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [cli, 'attack', ...args], { timeout: 60_000 }, (err, _o, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stderr }),
      ),
    );
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, new RegExp(`^vmstack: ${field}: `));
    t.is(r.stderr.trimEnd().split('\n').length, 1);
  }
});
