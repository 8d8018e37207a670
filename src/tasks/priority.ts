import { PRIORITY_LIMIT } from 'bullmq';

/**
 * Legacy priorities: higher runs sooner, default 50, FIFO among equals.
 * BullMQ priorities: 1 runs soonest, up to 2,097,151; 0 means "no priority", and BullMQ runs
 * such jobs before every prioritised one.
 *
 * Mapping: bullmq = PRIORITY_OFFSET - legacy, so legacy -1,000,000..1,000,000 becomes
 * 2,000,001..1 and both kinds of producer land in one ordered set (FIFO among equals is
 * BullMQ's own per-priority counter). A native producer that wants to order with legacy tasks
 * passes `priority: 1_000_001 - p` (legacy 50 → 999,951).
 *
 * Producers ask for PRIORITY_MIN..PRIORITY_MAX. A job's priority is shown on the same scale
 * whatever produced it, so every BullMQ priority has a legacy value, 1,000,001 (no priority)
 * down to -1,096,150, and toBullPriority gives it back exactly (retry keeps a native job's
 * priority that way).
 */
export const PRIORITY_MIN = -1_000_000;
export const PRIORITY_MAX = 1_000_000;
export const PRIORITY_OFFSET = 1_000_001;

export function toBullPriority(legacy: number): number {
  return PRIORITY_OFFSET - legacy;
}

/**
 * A BullMQ job without a priority (0) runs before every legacy priority, so it is reported one
 * above the highest legacy value.
 */
export function fromBullPriority(bull: number | undefined): number {
  return PRIORITY_OFFSET - (bull || 0);
}

/** Whether `legacy` is the legacy value of a priority BullMQ can hold (see fromBullPriority). */
export function isJobPriority(legacy: number): boolean {
  const bull = toBullPriority(legacy);
  return Number.isInteger(bull) && bull >= 0 && bull <= PRIORITY_LIMIT;
}
