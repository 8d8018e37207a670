/** How long a cancel heard for a job not held here is remembered. */
const KEPT_MS = 60_000;

/**
 * Cancels announced for jobs that are not (yet) held by this process's consumers: a job already
 * active in Redis may reach its consumer just after its cancel was announced. The consumer that
 * then takes the job takes its cancel here too, and stops it before it starts.
 */
export class RecentCancels {
  private readonly heard = new Map<string, number>();

  /** Remembers a cancel of `jobId` for a while. */
  remember(jobId: string, now = Date.now()): void {
    for (const [id, at] of this.heard) if (now - at > KEPT_MS) this.heard.delete(id);
    this.heard.set(jobId, now);
  }

  /** Whether a cancel of `jobId` was heard; forgets it. */
  take(jobId: string): boolean {
    return this.heard.size > 0 && this.heard.delete(jobId);
  }

  get size(): number {
    return this.heard.size;
  }
}
