// Types of bin/build.js for the TypeScript that imports it (the bench and the tests).
/** The file URL of the compiled CLI when dist/ is as new as src/; undefined otherwise. */
export function compiledEntry(): string | undefined;
/** Compiles src/ into dist/ (swapped in whole); returns the exit code. */
export function build(): number;
