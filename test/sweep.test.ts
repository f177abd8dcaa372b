import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test from 'ava';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));

test('sweep: every strategy at every block size, as JSON and as an offline HTML chart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmstack-sweep-'));
  const html = join(dir, 'sweep.html');
  const { stdout } = await run(
    process.execPath,
    [cli, 'sweep', '--strategies', 'direct,strict,bounce', '--bs', '4k,16k', '--iodepth', '4', '--size', '256k', '--output-format', 'json', '--html', html],
    { timeout: 120_000 },
  );
  const r = JSON.parse(stdout) as { cells: { strategy: string; blockSizeBytes: number; mibPerS: number }[] };
  t.is(r.cells.length, 6);
  const at = (s: string, bs: number) => r.cells.find((c) => c.strategy === s && c.blockSizeBytes === bs)!.mibPerS;
  for (const bs of [4096, 16384]) {
    t.true(at('direct', bs) > at('strict', bs), `direct beats strict at ${bs}`);
    t.true(at('bounce', bs) > at('strict', bs), `the pool beats strict at ${bs}`);
  }
  const page = readFileSync(html, 'utf8');
  t.regex(page, /<svg[^>]*role="img"/);
  t.notRegex(page, /<script|https?:\/\/(?!www\.w3\.org)/, 'offline: no script, nothing fetched');
});

test('sweep: a bad strategy is one line and exit 2', async (t) => {
  const err = await t.throwsAsync(run(process.execPath, [cli, 'sweep', '--strategies', 'strict,sideways']));
  const e = err as unknown as { code: number; stderr: string };
  t.is(e.code, 2);
  t.is(e.stderr.trim().split('\n').length, 1);
  t.regex(e.stderr, /--strategies: "sideways" is not allowed/);
});
