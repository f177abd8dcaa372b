#!/usr/bin/env node
// Runs AVA over the compiled tests with TAP output, passes the output through,
// and ends with one line "N passed, N failed[, N skipped]" counted from the TAP.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const avaCli = fileURLToPath(new URL('../node_modules/ava/entrypoints/cli.mjs', import.meta.url));
const child = spawn(process.execPath, [avaCli, '--tap', ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'inherit'] });
let passed = 0;
let failed = 0;
let skipped = 0;
const rl = createInterface({ input: child.stdout });
rl.on('line', (line) => {
  process.stdout.write(`${line}\n`);
  if (/^not ok \d+/.test(line)) {
    if (/# TODO/.test(line)) skipped++;
    else failed++;
  } else if (/^ok \d+/.test(line)) {
    if (/# (SKIP|TODO)/.test(line)) skipped++;
    else passed++;
  }
});
child.on('close', (code) => {
  // AVA 7's TAP reporter can die on a timeout before reporting the test: count that as a failure
  if (code !== 0 && failed === 0) failed = 1;
  const tail = skipped > 0 ? `, ${skipped} skipped` : '';
  process.stdout.write(`${passed} passed, ${failed} failed${tail}\n`);
  process.exit(code === 0 && failed === 0 && passed > 0 ? 0 : code || 1);
});
