// Modern-style sample task: the summary of a schedule's firing, run once every ticker's task completed.
import type { TaskContext } from '../src/index.ts';

export interface TickerSummaryParams {
  schedule: string;
  /** The firing's scheduled time, ISO 8601 in UTC. */
  scheduledAt: string;
  tickers: string[];
}

export default async function tickerSummary({ schedule, scheduledAt, tickers }: TickerSummaryParams, ctx: TaskContext) {
  if (!Array.isArray(tickers)) throw new Error('tickerSummary: params[0].tickers must be an array of tickers');
  ctx.log.info({ schedule, scheduledAt, tickers: tickers.length }, 'every ticker of the firing is analysed');
  return { schedule, scheduledAt, tickers: tickers.length, summarisedAt: new Date().toISOString() };
}
