import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { PRIORITY_MAX, PRIORITY_MIN } from '../tasks/priority.ts';

/**
 * A schedule: a cron pattern in a time zone that adds one task per ticker (the
 * schedules component turns these into BullMQ job schedulers).
 */
const scheduleSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, "_", "." or "-" (1-64 characters)'),
  cron: z.string().min(1),
  tz: z.string().min(1).optional(),
  module: z.string().min(1),
  params: z.array(z.unknown()).optional(),
  tickers: z.array(z.string().min(1)).optional(),
  priority: z.number().int().min(PRIORITY_MIN).max(PRIORITY_MAX).optional(),
  summary: z.strictObject({ module: z.string().min(1), params: z.array(z.unknown()).optional() }).optional(),
});

const fileSchema = z.strictObject({
  defaults: z
    .strictObject({
      priority: z.number().int().min(PRIORITY_MIN).max(PRIORITY_MAX).optional(),
      // Same ranges as the TASKMASTER_* variables in config.ts.
      timeout: z.number().int().min(1).max(2_147_483_647).optional(),
      attempts: z.number().int().min(1).max(1000).optional(),
      backoffMs: z.number().int().min(0).max(86_400_000).optional(),
      maxBatch: z.number().int().min(1).max(1_000_000).optional(),
      maxPayloadBytes: z.number().int().min(1024).max(512 * 1024 * 1024).optional(),
      keepCompleted: z.number().int().min(0).max(10_000_000).optional(),
      keepFailed: z.number().int().min(0).max(10_000_000).optional(),
    })
    .optional(),
  schedules: z.array(scheduleSchema).optional(),
});

export type ScheduleConfig = z.infer<typeof scheduleSchema>;
export type ConfigFile = z.infer<typeof fileSchema>;

/** Parses the optional JSON config file; a problem names the file and the setting's path. */
export function parseConfigFile(text: string, path: string): ConfigFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`TASKMASTER_CONFIG: ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? issue.path.join('.') : '(top level)';
    throw new ConfigError(`TASKMASTER_CONFIG: ${path}: ${where}: ${issue.message}`);
  }
  return parsed.data;
}
