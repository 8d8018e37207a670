import type { Command } from 'commander';
import { TaskmasterError } from '../errors.ts';
import { out, withClient, type Env } from './context.ts';

/** `taskmaster cancel <id>`: stop a running task, or remove a waiting one. */
export function registerCancel(program: Command, env: Env): void {
  program
    .command('cancel')
    .description(
      'cancel a task: a waiting, delayed or blocked one is removed; a running one is stopped wherever it runs and not retried',
    )
    .argument('<id>', 'job id, as `add` printed it')
    .option('--queue <name>', 'queue the task is in (default: TASKMASTER_QUEUE)')
    .option('--json', 'print the answer as JSON')
    .action(async (id: string, opts: { queue?: string; json?: boolean }) => {
      const result = await withClient(env, ({ client }) => client.cancel(id, opts.queue));
      if (result.state === 'not-found')
        throw new TaskmasterError(`no task with id ${id} in queue ${opts.queue ?? 'the configured queue'}`);
      if (opts.json) return out(JSON.stringify(result));
      const lines: Record<string, string> = {
        removed: `${id}: removed (it was ${'was' in result ? result.was : ''})`,
        cancelling: `${id}: running; asked its worker to stop it`,
        finished: `${id}: already ${'was' in result ? result.was : 'finished'}; nothing to cancel`,
      };
      out(lines[result.state]!);
    });
}
