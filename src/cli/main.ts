import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import type { Env } from './context.ts';
import { describeFailure } from './errors.ts';

type Register = (program: Command, env: Env) => void;

/**
 * Each command's module by command name, imported only when that command runs: a one-shot
 * command then loads the libraries it uses, not every other command's (the program's help and
 * an unknown command load them all).
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  start: async () => (await import('./start.ts')).registerStart,
  master: async () => (await import('./start.ts')).registerStart,
  workers: async () => (await import('./start.ts')).registerStart,
  add: async () => (await import('./add.ts')).registerAdd,
  status: async () => (await import('./status.ts')).registerStatus,
  cancel: async () => (await import('./cancel.ts')).registerCancel,
  history: async () => (await import('./history.ts')).registerHistory,
  retry: async () => (await import('./history.ts')).registerHistory,
  schedules: async () => (await import('./schedules.ts')).registerSchedules,
};

/** The commands to load for `argv`: the one it names first (`<command> …` or `help <command>`), else all. */
function commandsFor(argv: string[]): string[] {
  const name = argv[0] === 'help' ? argv[1] : argv[0];
  return name !== undefined && Object.hasOwn(COMMANDS, name) ? [name] : Object.keys(COMMANDS);
}

function version(): string {
  try {
    return JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

/** The program with the commands `argv` needs (all of them when `argv` is not given). */
export async function buildProgram(env: Env, argv: string[] = []): Promise<Command> {
  // Set before the commands are added: subcommands inherit them. Errors are thrown instead of
  // exiting so that main() prints every failure the same way.
  const program = new Command('taskmaster')
    .description('Distributed task runner for Node.js on Redis and BullMQ (the 2015 taskmaster model and protocol).')
    .version(version(), '-V, --version')
    .exitOverride()
    .configureOutput({ outputError: () => {} })
    .showSuggestionAfterError(true);
  // A module may register several commands (start, master, workers): each module registers once.
  const registers = new Set(await Promise.all(commandsFor(argv).map((name) => COMMANDS[name]!())));
  for (const register of registers) register(program, env);
  return program;
}

/**
 * Runs the command line and returns the exit code: 0 on success, 2 for a bad argument, 1 for
 * any other failure, with one `taskmaster: <message>` line per problem on stderr (the stack too
 * when LOG_LEVEL=debug or trace).
 */
export async function main(argv: string[] = process.argv.slice(2), env: Env = process.env): Promise<number> {
  try {
    const program = await buildProgram(env, argv);
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help or version asked for (exit 0), or `taskmaster` alone (help printed on stderr): no more to say.
      if (['commander.helpDisplayed', 'commander.help', 'commander.version'].includes(err.code))
        return err.exitCode === 0 ? 0 : 2;
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
