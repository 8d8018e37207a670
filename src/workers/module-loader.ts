import { statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { TaskmasterError, UnknownModuleError } from '../errors.ts';
import { moduleNameProblem } from '../tasks/validate.ts';
import { enableTypeScriptTasks } from './typescript-tasks.ts';

/** A task module's function: legacy `function (...params)` or modern `async (params, ctx)`. */
export type TaskFunction = (...args: unknown[]) => unknown;

/** Module names whose candidate paths are remembered; beyond this the memory starts over. */
const MAX_REMEMBERED_PATHS = 10_000;

/** The module exists but could not be loaded (syntax error, missing import, no function). */
export class ModuleLoadError extends TaskmasterError {
  override readonly code = 'MODULE_LOAD_FAILED';
}

/** File endings tried, in order, for a module name. */
export const MODULE_EXTENSIONS = ['.js', '.cjs', '.mjs', '.ts', '.mts', '.cts'];
const require = createRequire(import.meta.url);

interface Loaded {
  file: string;
  mtimeMs: number;
  fn: Promise<TaskFunction>;
  /** The function, once `fn` has resolved. */
  ready?: TaskFunction;
}

/**
 * Loads task modules from the tasks folder. A new file runs without a restart and an edited one
 * applies to runs that start after the edit; an unchanged module comes from the cache.
 * Whether a loaded module changed is told by its modification time, read at each run.
 */
export class ModuleLoader {
  private readonly cache = new Map<string, Loaded>();
  /** The files a module name may be, by name (joined once, not per run). */
  private readonly paths = new Map<string, string[]>();
  readonly dir: string;

  constructor(tasksDir: string) {
    this.dir = resolve(tasksDir);
  }

  /**
   * The module's function if it is loaded and its file unchanged, else undefined (then call
   * load). Spares the common case a promise.
   */
  loaded(name: string): TaskFunction | undefined {
    const cached = this.cache.get(name);
    if (!cached?.ready) return undefined;
    return unchanged(cached, this.stat(name)) ? cached.ready : undefined;
  }

  async load(name: string): Promise<TaskFunction> {
    // A name in the cache was checked when it was first loaded.
    const problem = this.cache.has(name) ? undefined : moduleNameProblem(name, this.dir);
    if (problem) throw new UnknownModuleError(`module ${problem}`);
    const found = this.stat(name);
    if (!found) {
      const known = await this.list();
      throw new UnknownModuleError(
        `unknown module "${name}": no ${name}{${MODULE_EXTENSIONS.join(',')}} in ${this.dir}; modules there: ${known.join(', ') || '(none)'}`,
      );
    }
    const cached = this.cache.get(name);
    if (unchanged(cached, found)) return cached!.fn;
    // Cache the load in flight, so that runs starting together import a module once.
    const fn = this.import(name, found.file, found.mtimeMs);
    const entry: Loaded = { ...found, fn };
    this.cache.set(name, entry);
    fn.then(
      (ready) => void (entry.ready = ready),
      () => this.cache.get(name) === entry && this.cache.delete(name),
    );
    return fn;
  }

  /** A synchronous stat of a file the OS has cached costs microseconds, far less than a trip through libuv. */
  private stat(name: string): { file: string; mtimeMs: number } | undefined {
    const cached = this.cache.get(name);
    let paths = this.paths.get(name);
    if (!paths) {
      paths = MODULE_EXTENSIONS.map((ext) => join(this.dir, name + ext));
      if (this.paths.size >= MAX_REMEMBERED_PATHS) this.paths.clear();
      this.paths.set(name, paths);
    }
    for (const file of cached ? [cached.file, ...paths] : paths) {
      const s = statSync(file, { throwIfNoEntry: false });
      if (s?.isFile()) return { file, mtimeMs: s.mtimeMs };
    }
    return undefined;
  }

  private async import(name: string, file: string, mtimeMs: number): Promise<TaskFunction> {
    // CommonJS modules live in require.cache whatever URL imports them: drop the old entry so
    // the edited file is read again. ESM modules are keyed by URL, hence the version query.
    delete require.cache[file];
    let mod: Record<string, unknown>;
    try {
      await enableTypeScriptTasks(file);
      // Whole numbers only: a '.' in the query would read as a file extension to some loaders.
      mod = await import(`${pathToFileURL(file).href}?v=${Math.round(mtimeMs * 1000)}`);
    } catch (err) {
      throw new ModuleLoadError(`module "${name}" (${file}) failed to load: ${(err as Error).message}`, { cause: err });
    }
    const fn = pickFunction(mod);
    if (!fn) {
      throw new ModuleLoadError(
        `module "${name}" (${file}) exports no function: use module.exports = function (...) {...} or export default async function (params, ctx) {...}`,
      );
    }
    return fn;
  }

  /** Module names available in the tasks folder (sub-folders as "a/b"). */
  async list(): Promise<string[]> {
    // A tasks folder that cannot be read offers no modules; running one names the folder in its error.
    const entries = await readdir(this.dir, { recursive: true, withFileTypes: true }).catch(() => []);
    const names = new Set<string>();
    for (const e of entries) {
      if (!e.isFile()) continue;
      const ext = MODULE_EXTENSIONS.find((x) => e.name.endsWith(x) && !e.name.endsWith('.d.ts'));
      if (!ext) continue;
      const rel = relative(this.dir, join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
      const name = rel.slice(0, -ext.length).split(sep).join('/');
      if (!moduleNameProblem(name, this.dir)) names.add(name);
    }
    return [...names].sort();
  }
}

/** Whether what was loaded is still the file found now. */
function unchanged(cached: Loaded | undefined, found: { file: string; mtimeMs: number } | undefined): boolean {
  return Boolean(cached && found && cached.file === found.file && cached.mtimeMs === found.mtimeMs);
}

/** `module.exports = fn`, `export default fn`, and either compiled to the other. */
function pickFunction(mod: Record<string, unknown>): TaskFunction | undefined {
  let candidate: unknown = mod.default ?? mod;
  for (let i = 0; i < 3 && candidate && typeof candidate !== 'function'; i++) {
    candidate = (candidate as Record<string, unknown>).default;
  }
  return typeof candidate === 'function' ? (candidate as TaskFunction) : undefined;
}
