#!/usr/bin/env node
// The command line. `npm install` compiles src/ into dist/ (bin/build.js); the compiled files run
// when they are as new as the sources. Otherwise (sources edited since, or no build) the
// TypeScript runs through tsx, which transpiles it at every start.
import { compiledEntry } from './build.js';

async function load() {
  const entry = compiledEntry();
  if (entry) {
    try {
      return await import(entry);
    } catch (err) {
      // dist/ was swapped by a build between the check and the import: run the sources.
      if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
    }
  }
  const { register } = await import('tsx/esm/api');
  register();
  return import('../src/cli/main.ts');
}

const { run } = await load();
await run();
