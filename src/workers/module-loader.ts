import { statSync, watch, type FSWatcher } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { TaskmasterError, UnknownModuleError } from '../errors.ts';
import { moduleNameProblem } from '../tasks/validate.ts';
import { enableTypeScriptTasks } from './typescript-tasks.ts';

/** A task module's function: legacy `function (...params)` or modern `async (params, ctx)`. */
export type TaskFunction = (...args: unknown[]) => unknown;

/** Module names whose candidate paths are remembered; beyond this the memory starts over. */
const MAX_REMEMBERED_PATHS = 10_000;
/**
 * Longest a loaded module goes without a stat while its folder is watched and quiet: the bound
 * on how late an edit applies where the file system does not report changes (network mounts).
 */
const RECHECK_MS = 1000;

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
  /** The folder generation when the file was last seen unchanged (NaN: folder not watched). */
  gen: number;
  /** When it was last seen unchanged (performance.now()). */
  checkedAt: number;
}

/**
 * Loads task modules from the tasks folder. A new file runs without a restart and an edited one
 * applies to runs that start after the edit; an unchanged module comes from the cache.
 *
 * Whether a loaded module changed is told by its modification time, read again only when its
 * folder reported a change (fs.watch) or RECHECK_MS has passed: a stat per run was a
 * noticeable part of a short task's cost. Where a folder cannot be watched, every turn of the
 * event loop that starts runs stats the module again.
 */
export class ModuleLoader {
  private readonly cache = new Map<string, Loaded>();
  /** The files a module name may be, by name (joined once, not per run). */
  private readonly paths = new Map<string, string[]>();
  /** What find() saw in this turn of the event loop, by name. */
  private readonly seenThisTurn = new Map<string, { file: string; mtimeMs: number } | undefined>();
  /** A watcher per folder holding loaded modules; null where watching failed. */
  private readonly watchers = new Map<string, FSWatcher | null>();
  /** Goes up whenever a watched folder reports a change. */
  private generation = 0;
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
    const now = performance.now();
    if (cached.gen === this.generation && now - cached.checkedAt < RECHECK_MS) return cached.ready;
    const gen = this.generation;
    if (!unchanged(cached, this.find(name))) return undefined;
    if (!Number.isNaN(cached.gen)) {
      cached.gen = gen;
      cached.checkedAt = now;
    }
    return cached.ready;
  }

  async load(name: string): Promise<TaskFunction> {
    // A name in the cache was checked when it was first loaded.
    const problem = this.cache.has(name) ? undefined : moduleNameProblem(name, this.dir);
    if (problem) throw new UnknownModuleError(`module ${problem}`);
    // Watching starts before the look, so a change after it is heard.
    const watched = this.watch(dirname(join(this.dir, name)));
    const gen = this.generation;
    const checkedAt = performance.now();
    const found = this.find(name);
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
    const entry: Loaded = { ...found, fn, gen: watched ? gen : NaN, checkedAt };
    this.cache.set(name, entry);
    fn.then(
      (ready) => void (entry.ready = ready),
      () => this.cache.get(name) === entry && this.cache.delete(name),
    );
    return fn;
  }

  /**
   * One stat per module and turn of the event loop: runs that start in the same turn (a burst
   * of jobs fetched together) see the same file, and a run in any later turn sees an edit that
   * landed before it. A synchronous stat of a file the OS has cached costs microseconds, far
   * less than a round trip through libuv's thread pool.
   */
  private find(name: string): { file: string; mtimeMs: number } | undefined {
    if (this.seenThisTurn.has(name)) return this.seenThisTurn.get(name);
    const found = this.stat(name);
    if (this.seenThisTurn.size === 0) setImmediate(() => this.seenThisTurn.clear());
    this.seenThisTurn.set(name, found);
    return found;
  }

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

  /** Watches `dir` (once) for changes; false where it cannot be watched. */
  private watch(dir: string): boolean {
    let w = this.watchers.get(dir);
    if (w === undefined) {
      try {
        w = watch(dir, { persistent: false }, () => this.generation++);
        w.on('error', () => {
          // The folder went away or the watch broke: its modules are looked at every turn again.
          w!.close();
          this.watchers.set(dir, null);
          for (const entry of this.cache.values()) if (dirname(entry.file) === dir) entry.gen = NaN;
        });
      } catch {
        w = null;
      }
      this.watchers.set(dir, w);
    }
    return w !== null;
  }

  /** Stops watching folders; loaded modules are looked at every turn from now on. */
  close(): void {
    for (const w of this.watchers.values()) w?.close();
    this.watchers.clear();
    for (const entry of this.cache.values()) entry.gen = NaN;
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
