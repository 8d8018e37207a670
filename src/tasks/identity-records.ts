/**
 * The two kinds of entry Taskmaster keeps about task identities (see queue/keys.ts), as
 * TypeScript reads and writes them; the Lua scripts read them the same way (claim-of.lua,
 * finish-record.lua).
 */

/** A live task's hold on its identity, stored as `<at>|<job key>` (also a re-add in progress). */
export interface Claim {
  /** When it was made (ms). */
  at: number;
  jobKey: string;
}

/** A recorded outcome, stored as JSON with its fields in this order. */
export interface Outcome {
  jobId: string;
  at: number;
  /** The queue of the job (completions: a duplicate within the dedup window names it). */
  queue?: string;
  reason?: string;
}

export function encodeClaim(claim: Claim): string {
  return `${claim.at}|${claim.jobKey}`;
}

/**
 * The claim an entry holds, or undefined for none: no entry, or an outcome record kept in its
 * place (a completion, see claimed.lua).
 */
export function decodeClaim(entry: string | null | undefined): Claim | undefined {
  if (!entry || entry.startsWith('{')) return undefined;
  const sep = entry.indexOf('|');
  if (sep < 0) return undefined;
  return { at: Number(entry.slice(0, sep)), jobKey: entry.slice(sep + 1) };
}

/** An outcome record with the fields given, in the order it is stored (undefined ones left out). */
export function outcomeRecord(jobId: string, at: number, more: { queue?: string; reason?: string } = {}): Outcome {
  const record: Outcome = { jobId, at };
  if (more.queue !== undefined) record.queue = more.queue;
  if (more.reason !== undefined) record.reason = more.reason;
  return record;
}

export function encodeOutcome(record: Outcome): string {
  return JSON.stringify(outcomeRecord(record.jobId, record.at, record));
}

/** The outcome record `json` holds; throws where it is not JSON. */
export function parseOutcome(json: string): Outcome {
  return JSON.parse(json) as Outcome;
}

/** The outcome record an entry holds, or undefined for none: no entry, a claim, or what is not JSON. */
export function decodeOutcome(entry: string | null | undefined): Outcome | undefined {
  if (!entry?.startsWith('{')) return undefined;
  try {
    return parseOutcome(entry);
  } catch {
    // Not a record Taskmaster wrote: read as none.
    return undefined;
  }
}
