// Public API. Producers that only need to add work can also use BullMQ directly (see README).
export { loadConfig, type Config, type RetryPolicy, type Limits } from './config/config.ts';
export {
  TaskmasterError,
  ConfigError,
  InvalidTaskError,
  UnknownModuleError,
  TaskTimeoutError,
  DependencyFailedError,
  RedisUnavailableError,
  UsageError,
  type TaskProblem,
} from './errors.ts';
export { createLogger, type Logger } from './logger.ts';
export { createRedis } from './queue/connection.ts';
export { TaskClient, type AddedTask } from './tasks/task-client.ts';
export { Components, type ComponentsOptions } from './components.ts';
export { validateTasks, type ValidateOptions } from './tasks/validate.ts';
export {
  ENVELOPE_KEY,
  taskFromJob,
  toJobData,
  type Task,
  type DependencyRef,
  type Envelope,
  type JobTask,
} from './tasks/task.ts';
export { toBullPriority, fromBullPriority, PRIORITY_MIN, PRIORITY_MAX } from './tasks/priority.ts';
export { dependencyKey, taskKey, canonicalJson } from './tasks/identity.ts';
export { TaskWorker, type TaskWorkerOptions } from './workers/task-worker.ts';
export { defineTask } from './workers/define-task.ts';
export type { TaskContext } from './workers/run-task.ts';
export { startBridge, type Bridge, type BridgeOptions } from './bridge/bridge.ts';
export type { LegacyTask } from './bridge/legacy-shape.ts';
