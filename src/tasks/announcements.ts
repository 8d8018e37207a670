import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { CANCEL_SWEEP_MS, type Cancellations } from './cancellations.ts';
import type { Gates } from './gates.ts';

export interface AnnouncementsOptions {
  connection: Redis;
  cancellations: Cancellations;
  gates: Gates;
  /** Where the finishing script announces identities whose gates are waiting (keys.openingChannel). */
  openingChannel: string;
  /** Job ids whose runs are here, whose stored cancel requests are caught up on. */
  held(): string[];
  /** A cancel request for a job, announced or caught up on. */
  cancel(jobId: string): void;
  log: Logger;
}

/**
 * What a consumer of tasks (a task worker, the bridge) listens to: cancel requests, and gates to
 * open for identities the finishing script recorded. On every (re)subscription the stored cancel
 * requests for jobs held here are caught up on; gates announced meanwhile are in the `opening`
 * set, which the reconciler works off. Returns the releaser.
 */
export function listenForAnnouncements(o: AnnouncementsOptions): () => void {
  const sub = o.connection.duplicate();
  // Errors of a duplicate are logged already, by the process's outage log (createRedis watches every duplicate).
  sub.on('error', () => {});
  sub.on('message', (channel: string, message: string) => {
    if (channel === o.openingChannel)
      void o.gates.open(message).catch((err) => o.log.warn({ err }, 'opening gates failed; the reconciler will'));
    else o.cancel(message);
  });
  sub.on('ready', () => {
    void sub
      .subscribe(o.cancellations.channel, o.openingChannel)
      .catch((err) => o.log.warn({ err }, 'could not subscribe to cancel requests and gate openings'));
    void o.cancellations
      .pending(o.held())
      .then((ids) => ids.forEach(o.cancel))
      .catch((err) => o.log.debug({ err }, 'could not read stored cancel requests; the next (re)subscription does'));
  });
  // Requests whose runs ended without honouring them (finished first, or by a consumer that
  // does not listen) would stay forever; a failed sweep is retried next time (Redis away).
  const stopSweeping = o.cancellations.sweepEvery(CANCEL_SWEEP_MS, (err) =>
    o.log.debug({ err }, 'could not sweep cancel requests'),
  );
  return () => {
    stopSweeping();
    sub.disconnect();
  };
}
