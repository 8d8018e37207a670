// Compiles src/ to JavaScript in dist/ (the `prepare` script, so `npm install` and `npm ci` run
// it) and tells bin/taskmaster.js whether dist/ is as new as src/. Type errors do not stop the
// build: it only transpiles (`npm run typecheck` checks types), as tsx does in development.
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL, URL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SRC = join(ROOT, 'src');
const DIST = join(ROOT, 'dist');
/** Written last into dist/: when the build began, so that a source edited during it counts as newer. */
const STAMP = 'build-stamp.json';
const ENTRY = join('cli', 'main.js');

/** Every file and folder under `dir`, with its modification time. */
function walk(dir, visit) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    visit(path, entry);
    if (entry.isDirectory()) walk(path, visit);
  }
}

/** Newest modification time under src/ (folders too: a deleted or renamed file changes its folder's). */
function newestSource() {
  let newest = statSync(SRC).mtimeMs;
  walk(SRC, (path) => (newest = Math.max(newest, statSync(path).mtimeMs)));
  return newest;
}

/**
 * The file URL of the compiled CLI when dist/ holds a build that began after the last change to
 * src/ (or src/ is absent, as in a package that ships only dist/); undefined otherwise.
 */
export function compiledEntry() {
  let startedAt;
  try {
    startedAt = JSON.parse(readFileSync(join(DIST, STAMP), 'utf8')).startedAt;
  } catch {
    return undefined; // no build (or an unfinished one): the sources run through tsx
  }
  let newest;
  try {
    newest = newestSource();
  } catch {
    newest = -Infinity; // no src/ to be newer
  }
  return newest <= startedAt ? pathToFileURL(join(DIST, ENTRY)).href : undefined;
}

/** Copies the files under src/ that are not TypeScript (Lua scripts, the status page) beside the compiled ones. */
function copyAssets(out) {
  walk(SRC, (path, entry) => {
    if (!entry.isFile() || /\.[cm]?ts$/.test(entry.name)) return;
    const target = join(out, relative(SRC, path));
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(path, target);
  });
}

/**
 * Builds into a fresh folder and then swaps it in place of dist/, so that a command started
 * meanwhile finds either the old build or the new one. Returns the exit code.
 */
export function build() {
  const startedAt = Date.now();
  let tsc;
  try {
    tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  } catch {
    // An install without devDependencies (`npm install --omit=dev`): tsx, a dependency, runs src/.
    process.stderr.write(
      'taskmaster: TypeScript is not installed, so src/ is not compiled; commands run it through tsx\n',
    );
    return 0;
  }
  const out = join(ROOT, `dist.building-${process.pid}`);
  rmSync(out, { recursive: true, force: true });
  const result = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', out], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  if (result.status !== 0) {
    rmSync(out, { recursive: true, force: true });
    process.stderr.write(`taskmaster: compiling src/ failed (${result.error?.message ?? `exit ${result.status}`})\n`);
    return 1;
  }
  copyAssets(out);
  writeFileSync(join(out, STAMP), JSON.stringify({ startedAt }) + '\n');
  rmSync(DIST, { recursive: true, force: true });
  renameSync(out, DIST);
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) process.exitCode = build();
