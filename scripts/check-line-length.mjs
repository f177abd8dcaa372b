#!/usr/bin/env node
// The line length rule for what Biome's formatter does not wrap. The
// formatter (biome.json, lineWidth 160) wraps code at 160 characters; it leaves
// comments and string literals as they are. This fails on any comment line
// over 160 characters, except a row of a layout table in a doc comment
// (` * | offset | ... |`), which cannot be wrapped. Long string literals
// (test titles, messages, HTML templates) stay whole, as formatters keep them.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const MAX_LINE_CHARS = 160;
const files = execFileSync('git', ['ls-files', '*.ts', '*.mjs'], { encoding: 'utf8' }).split('\n').filter(Boolean);
const isComment = (line) => /^\s*(\/\/|\/\*|\*)/.test(line);
const isTableRow = (line) => /^\s*\*\s*\|.*\|\s*$/.test(line);
let offenders = 0;
for (const file of files) {
  readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.length > MAX_LINE_CHARS && isComment(line) && !isTableRow(line)) {
        offenders++;
        process.stderr.write(`${file}:${i + 1}: ${line.length} characters (at most ${MAX_LINE_CHARS})\n`);
      }
    });
}
if (offenders > 0) {
  process.stderr.write(`${offenders} lines over ${MAX_LINE_CHARS} characters\n`);
  process.exit(1);
}
