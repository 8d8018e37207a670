/**
 * Whether this code runs compiled (dist/*.js, as `npm install` builds it) rather than as the
 * TypeScript sources through a loader (tsx in development, vitest in the tests).
 */
export const COMPILED = import.meta.url.endsWith('.js');

const TYPESCRIPT_FILE = /\.[cm]?ts$/;
let registered: Promise<void> | undefined;

/**
 * Makes a task module written in TypeScript loadable: a compiled process has no loader for it,
 * so tsx is registered the first time one is met (a process that runs only JavaScript tasks
 * never pays for it). Resolves at once for any other file, or where a loader is present.
 */
export async function enableTypeScriptTasks(file: string): Promise<void> {
  if (!COMPILED || !TYPESCRIPT_FILE.test(file)) return;
  registered ??= Promise.all([import('tsx/esm/api'), import('tsx/cjs/api')]).then(([esm, cjs]) => {
    esm.register();
    cjs.register();
  });
  await registered;
}
