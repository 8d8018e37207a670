import { readFileSync } from 'node:fs';

/** Tickers: 1-32 letters, digits and the marks symbols use (`BRK.B`, `BRK-B`, `^GSPC`, `EURUSD=X`, `LON:VOD`). */
const TICKER = /^[A-Za-z0-9.^=_:/-]{1,32}$/;
export const TICKER_RULE = '1 to 32 letters, digits, ".", "^", "=", "_", ":", "/" or "-"';

export function tickerProblem(ticker: unknown): string | undefined {
  if (typeof ticker === 'string' && TICKER.test(ticker)) return undefined;
  return `${JSON.stringify(ticker)} is not a ticker: ${TICKER_RULE}`;
}

/**
 * Checks a list of tickers; `where(i)` names the place of the i-th one in messages. A ticker
 * listed twice is refused: it would be one task, and the list probably has a mistake.
 */
export function tickersProblem(tickers: readonly unknown[], where: (i: number) => string): string | undefined {
  if (!tickers.length) return 'lists no ticker: give at least one';
  const seen = new Map<string, number>();
  for (let i = 0; i < tickers.length; i++) {
    const problem = tickerProblem(tickers[i]);
    if (problem) return `${where(i)}: ${problem}`;
    const t = tickers[i] as string;
    const first = seen.get(t);
    if (first !== undefined) return `${where(i)}: ${JSON.stringify(t)} is listed twice (also ${where(first)})`;
    seen.set(t, i);
  }
  return undefined;
}

/**
 * Reads a tickers file: one ticker per line; blank lines and everything from a `#` to the end
 * of its line are ignored. Returns the tickers with the line each was on.
 */
export function readTickersFile(path: string): { tickers: string[]; lines: number[] } {
  const text = readFileSync(path, 'utf8');
  const tickers: string[] = [];
  const lines: number[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    tickers.push(line);
    lines.push(i + 1);
  });
  return { tickers, lines };
}
