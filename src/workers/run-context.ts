import type { Job as BullJob } from 'bullmq';
import type { Logger } from 'pino';
import type { TaskClient } from '../tasks/task-client.ts';
import type { RunAbort, TaskContext } from './run-task.ts';
import type { RunInfo } from './task-worker.ts';

/**
 * The `ctx` of one run. `progress` and `add` come as functions of their own, so
 * `const { progress } = ctx` works.
 */
export class RunContext implements TaskContext {
  readonly #log: Logger;
  /** The run's details (private, so that a task serialising its context does not show them). */
  #run?: RunInfo;

  constructor(
    private readonly job: BullJob,
    readonly module: string,
    parentLog: Logger,
    readonly abort: RunAbort,
    private readonly client: TaskClient,
  ) {
    this.#log = parentLog.child({ jobId: job.id, module });
  }

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
    return this.#log;
  }

  get progress(): TaskContext['progress'] {
    return (value) => this.job.updateProgress(value);
  }

  get add(): TaskContext['add'] {
    return async (tasks) => (await this.client.add(tasks)).map((t) => t.id);
  }
}
