import type { Job as BullJob } from 'bullmq';
import type { Logger } from 'pino';
import type { TaskClient } from '../tasks/task-client.ts';
import type { RunAbort, TaskContext } from './run-task.ts';
import type { RunInfo } from './task-worker.ts';

/**
 * The `ctx` of one run. What costs something — the child logger, the AbortController, the
 * functions — is made when the task first asks for it: a run that uses none of it (most
 * legacy tasks) pays for none of it. `progress` and `add` come as functions of their own, so
 * `const { progress } = ctx` works.
 */
export class RunContext implements TaskContext {
  private child?: Logger;
  /** The run's details (private, so that a task serialising its context does not show them). */
  #run?: RunInfo;

  constructor(
    private readonly job: BullJob,
    readonly module: string,
    private readonly parentLog: Logger,
    readonly abort: RunAbort,
    private readonly client: TaskClient,
  ) {}

  get run(): RunInfo | undefined {
    return this.#run;
  }

  set run(run: RunInfo) {
    this.#run = run;
  }

  get jobId(): string {
    return this.job.id!;
  }

  get attempt(): number {
    return this.job.attemptsMade + 1;
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  get log(): Logger {
    return (this.child ??= this.parentLog.child({ jobId: this.job.id, module: this.module }));
  }

  get progress(): TaskContext['progress'] {
    return (value) => this.job.updateProgress(value);
  }

  get add(): TaskContext['add'] {
    return async (tasks) => (await this.client.add(tasks)).map((t) => t.id);
  }
}
