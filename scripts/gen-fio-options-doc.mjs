// Writes docs/fio-options.md from the fio option table (packages/cli/src/fio/options-doc.ts), after a build (`npx tsc -b`).
// packages/cli/test/fio-options-doc.test.ts fails while the file differs from what this writes.
import { writeFileSync } from 'node:fs';
import { formatFioOptionsDoc } from '../packages/cli/dist/src/fio/options-doc.js';

const path = new URL('../docs/fio-options.md', import.meta.url);
writeFileSync(path, formatFioOptionsDoc());
console.log(`wrote ${path.pathname}`);
