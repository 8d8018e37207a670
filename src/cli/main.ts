import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { registerAdd } from './add.ts';
import { registerCancel } from './cancel.ts';
import { registerHistory } from './history.ts';
// Registers only: the command's code is imported when it runs.
import { registerSchedules } from './schedules.ts';
import type { Env } from './context.ts';
import { describeFailure } from './errors.ts';
import { registerStart } from './start.ts';
import { registerStatus } from './status.ts';

function version(): string {
  try {
    return JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

export function buildProgram(env: Env): Command {
  // Set before the commands are added: subcommands inherit them. Errors are thrown instead of
  // exiting so that main() prints every failure the same way.
  const program = new Command('taskmaster')
    .description('Distributed task runner for Node.js on Redis and BullMQ (the 2015 taskmaster model and protocol).')
    .version(version(), '-V, --version')
    .exitOverride()
    .configureOutput({ outputError: () => {} })
    .showSuggestionAfterError(true);
  registerStart(program, env);
  registerAdd(program, env);
  registerStatus(program, env);
  registerCancel(program, env);
  registerHistory(program, env);
  registerSchedules(program, env);
  return program;
}

/**
 * Runs the command line and returns the exit code: 0 on success, 2 for a bad argument, 1 for
 * any other failure, with one `taskmaster: <message>` line per problem on stderr (the stack too
 * when LOG_LEVEL=debug or trace).
 */
export async function main(argv: string[] = process.argv.slice(2), env: Env = process.env): Promise<number> {
  const program = buildProgram(env);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help or version asked for (exit 0), or `taskmaster` alone (help printed on stderr): no more to say.
      if (['commander.helpDisplayed', 'commander.help', 'commander.version'].includes(err.code)) return err.exitCode === 0 ? 0 : 2;
    }
    return report(err, env);
  }
}

function report(err: unknown, env: Env): number {
  const { lines, exitCode } = describeFailure(err);
  for (const line of lines) process.stderr.write(`taskmaster: ${line}\n`);
  if (/^(debug|trace)$/i.test(env.LOG_LEVEL ?? '') && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  return exitCode;
}

/**
 * The process entry point (bin/taskmaster.js): runs main() and exits with its code. An error
 * that escapes every handler (a bug) still ends as one line, not a stack trace.
 */
export async function run(argv: string[] = process.argv.slice(2), env: Env = process.env): Promise<void> {
  const crash = (err: unknown) => {
    report(err, env);
    process.exit(1);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  const code = await main(argv, env);
  process.exitCode = code;
  // Everything the command opened is closed by now; a stray handle must not keep it from exiting.
  setTimeout(() => process.exit(code), 1000).unref();
}
