/**
 * The package boundary rule, checked mechanically: the four worker packages
 * (guest-kernel, vmm, host-vfio, nvme-device) talk to each other only through
 * the shared memory formats of @vmstack/shm and the IOMMU hardware model of
 * @vmstack/iommu-hw, never through each other's code. Every .ts file under
 * packages/<worker>/src and packages/<worker>/test is read; any import of
 * another @vmstack package, or a relative path leaving the package, fails
 * with file:line. Their package.json dependencies and tsconfig references
 * must say the same.
 */

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WORKERS = ['guest-kernel', 'vmm', 'host-vfio', 'nvme-device'] as const;
const ALLOWED = new Set(['@vmstack/shm', '@vmstack/iommu-hw']);
const ALLOWED_DIRS = new Set(['shm', 'iommu-hw']);

/** Module specifiers of `from '…'`, `import '…'`, `import('…')` and `require('…')` on one line. */
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*|\brequire\s*\(\s*)['"]([^'"]+)['"]/g;

function tsFiles(dir: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) {
    if (e === 'dist' || e === 'node_modules') continue;
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...tsFiles(p));
    else if (e.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** What is wrong with the imports of one file of package `pkgDir`, as "file:line: …". */
export function importViolations(file: string, text: string, pkgDir: string): string[] {
  const out: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    for (const m of lines[i].matchAll(SPECIFIER)) {
      const spec = m[1];
      const where = `${relative(ROOT, file)}:${i + 1}`;
      if (spec.startsWith('@vmstack/')) {
        const name = spec.split('/').slice(0, 2).join('/');
        if (!ALLOWED.has(name)) out.push(`${where}: imports ${spec} (a worker package may import only ${[...ALLOWED].join(' and ')})`);
      } else if (spec.startsWith('.')) {
        const target = resolve(dirname(file), spec);
        if (target !== pkgDir && !target.startsWith(pkgDir + sep)) out.push(`${where}: imports ${spec}, outside its package`);
      }
    }
  }
  return out;
}

test('the import scanner finds what it must reject (a check of the check)', (t) => {
  const pkg = join(ROOT, 'packages', 'vmm');
  const file = join(pkg, 'src', 'x.ts');
  const text = [
    "import { A } from '@vmstack/shm';",
    "import type { B } from '@vmstack/host-vfio';",
    'import {',
    '  C,',
    "} from '@vmstack/nvme-device';",
    "export * from '../../guest-kernel/src/dma.js';",
    "const d = await import('@vmstack/cli');",
    "import { E } from '@vmstack/iommu-hw';",
    "import { F } from './local.js';",
  ].join('\n');
  const at = importViolations(file, text, pkg).map((v) => v.slice(0, v.indexOf(': ')));
  t.deepEqual(at, ['packages/vmm/src/x.ts:2', 'packages/vmm/src/x.ts:5', 'packages/vmm/src/x.ts:6', 'packages/vmm/src/x.ts:7']);
});

test('worker packages import only @vmstack/shm and @vmstack/iommu-hw, in src and test', (t) => {
  const violations: string[] = [];
  let files = 0;
  for (const w of WORKERS) {
    const pkg = join(ROOT, 'packages', w);
    const found = [...tsFiles(join(pkg, 'src')), ...tsFiles(join(pkg, 'test'))];
    t.true(found.length > 0, `${w}: no .ts files found`);
    files += found.length;
    for (const f of found) violations.push(...importViolations(f, readFileSync(f, 'utf8'), pkg));
  }
  t.true(files >= 20, `only ${files} files scanned`);
  t.deepEqual(violations, []);
});

test('worker packages depend on, and reference, only shm and iommu-hw', (t) => {
  const violations: string[] = [];
  for (const w of WORKERS) {
    const pkg = join(ROOT, 'packages', w);
    const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
    for (const key of ['dependencies', 'devDependencies', 'peerDependencies', 'optionalDependencies']) {
      for (const dep of Object.keys(manifest[key] ?? {})) {
        if (dep.startsWith('@vmstack/') && !ALLOWED.has(dep)) violations.push(`packages/${w}/package.json: ${key} has ${dep}`);
      }
    }
    const tsconfig = JSON.parse(readFileSync(join(pkg, 'tsconfig.json'), 'utf8')) as { references?: { path: string }[] };
    for (const r of tsconfig.references ?? []) {
      const target = relative(join(ROOT, 'packages'), resolve(pkg, r.path));
      if (!ALLOWED_DIRS.has(target)) violations.push(`packages/${w}/tsconfig.json: references ${r.path}`);
    }
  }
  t.deepEqual(violations, []);
});
