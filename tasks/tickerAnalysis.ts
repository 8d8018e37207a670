// Modern-style sample task: async, typed, cancellable. Used by schedules (one run per ticker).
import type { TaskContext } from '../src/index.ts';

export interface TickerAnalysisParams {
  ticker: string;
  /** Simulated work in ms. @defaultValue 20 */
  workMs?: number;
}

export default async function tickerAnalysis({ ticker, workMs = 20 }: TickerAnalysisParams, ctx: TaskContext) {
  if (typeof ticker !== 'string' || !ticker)
    throw new Error('tickerAnalysis: params[0].ticker must be a non-empty string');
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, workMs);
    ctx.signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(ctx.signal.reason);
    });
  });
  // A stand-in for real analysis: a deterministic score from the ticker's letters.
  const score = [...ticker].reduce((s, c) => (s * 31 + c.charCodeAt(0)) % 1000, 7) / 10;
  ctx.log.debug({ ticker, score }, 'analysed');
  return { ticker, score, analysedAt: new Date().toISOString() };
}
