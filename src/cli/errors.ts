import { CommanderError } from 'commander';
import { InvalidTaskError, TaskmasterError, UsageError } from '../errors.ts';
import { InvalidQueryError } from '../archive/query.ts';

/** Problems found in a batch file, each already naming its line (ndjson) or index (json). */
export class BatchFileError extends TaskmasterError {
  override readonly code = 'TASK_INVALID';
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`${file}: ${problems.length} problem(s), nothing was added: ${problems[0]}`);
  }
}

/** At most this many problems are printed; the rest are counted. */
const MAX_LINES = 50;

/** The lines printed for a failed command (each gets a `taskmaster: ` prefix) and its exit code. */
export function describeFailure(err: unknown): { lines: string[]; exitCode: number } {
  if (err instanceof CommanderError) return { lines: [err.message.replace(/^error: /, '')], exitCode: 2 };
  if (err instanceof UsageError) return { lines: [err.message], exitCode: 2 };
  if (err instanceof InvalidQueryError)
    return { lines: [err.param === 'module' ? err.message : `--${err.message}`], exitCode: 2 };
  if (err instanceof InvalidTaskError) {
    return {
      lines: cap(
        err.problems.map((p) =>
          p.index < 0 ? `${p.field}: ${p.message}` : `task[${p.index}].${p.field}: ${p.message}`,
        ),
      ),
      exitCode: 1,
    };
  }
  if (err instanceof BatchFileError) {
    return {
      lines: cap(err.problems.map((p) => `${err.file}: ${p}`)).concat(`${err.file}: nothing was added`),
      exitCode: 1,
    };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { lines: [message.split('\n')[0] || 'unknown error'], exitCode: 1 };
}

function cap(lines: string[]): string[] {
  if (lines.length <= MAX_LINES) return lines;
  return [...lines.slice(0, MAX_LINES), `... and ${lines.length - MAX_LINES} more problems`];
}
