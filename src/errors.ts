/**
 * Every error Taskmaster raises on purpose carries a stable `code`, so callers
 * (the CLI, the Socket.IO bridge, the HTTP API) can answer without parsing text.
 */
export class TaskmasterError extends Error {
  readonly code: string = 'TASKMASTER_ERROR';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A configuration value (environment variable or config file) is not allowed. */
export class ConfigError extends TaskmasterError {
  override readonly code = 'CONFIG_INVALID';
}

/** One problem with one task: `index` is its place in a batch, `field` the offending path. */
export interface TaskProblem {
  index: number;
  field: string;
  message: string;
}

/** A task or batch failed validation; nothing of it was added. */
export class InvalidTaskError extends TaskmasterError {
  override readonly code = 'TASK_INVALID';
  readonly problems: TaskProblem[];
  constructor(problems: TaskProblem[]) {
    super(
      problems
        .slice(0, 5)
        .map((p) => `task[${p.index}].${p.field}: ${p.message}`)
        .join('; ') + (problems.length > 5 ? `; and ${problems.length - 5} more` : ''),
    );
    this.problems = problems;
  }
}

/** No module of that name exists in the tasks folder. */
export class UnknownModuleError extends TaskmasterError {
  override readonly code = 'MODULE_UNKNOWN';
}

/** A run took longer than its task's timeout. */
export class TaskTimeoutError extends TaskmasterError {
  override readonly code = 'TASK_TIMEOUT';
}

/** A dependency failed for good, so its dependent cannot run. */
export class DependencyFailedError extends TaskmasterError {
  override readonly code = 'DEPENDENCY_FAILED';
}

/** Redis could not be reached or started. */
export class RedisUnavailableError extends TaskmasterError {
  override readonly code = 'REDIS_UNAVAILABLE';
}

/** A command-line argument is not allowed. */
export class UsageError extends TaskmasterError {
  override readonly code = 'USAGE';
}

/** The archive did not answer a lookup of dependencies in time; the add wrote nothing. */
export class ArchiveLookupTimeoutError extends TaskmasterError {
  override readonly code = 'ARCHIVE_LOOKUP_TIMEOUT';
}

/** Redis refused to write a batch (a job of it exists already, or a parent is missing); nothing of it was written. */
export class TaskAddRefusedError extends TaskmasterError {
  override readonly code = 'TASK_ADD_REFUSED';
}
