import type { Peer } from './presence.ts';

/** The name every 2016 worker gives itself (its code has a TODO to add a real one): it names no one. */
const PLACEHOLDER_NAME = 'workerName';

/**
 * Who a runner is across reconnects, when each connection gets a new socket id: the name it
 * gives itself and the address it connects from. 2016 workers give no name, or the same
 * placeholder, so for them this is the address alone.
 */
export function runnerKey(peer: Pick<Peer, 'name' | 'address'>): string {
  const name = peer.name && peer.name !== PLACEHOLDER_NAME ? peer.name : '';
  return `${name}@${peer.address}`;
}

interface Streak {
  /** When the first drop of this streak happened: connections opened before it are left alone. */
  since: number;
  drops: number;
  /** Until when connections opened since `since` get no work. */
  until: number;
}

/**
 * Backs off a runner whose connections drop the tasks they hold. A task given back by a
 * disconnect goes to the front of the queue, and a runner that reconnects at once would take
 * it again, each time spending one of the task's starts; so a connection opened after a
 * connection of the same runner (`runnerKey`) dropped tasks gets work only once a back-off has
 * passed, doubling with each drop of the streak. Connections that were already open — a healthy
 * runner at the same address — are not held back. A streak ends when a connection opened since
 * it completes a task, or once its back-off has been over for `maxMs`. Kept per master.
 */
export class RunnerBackoff {
  private readonly streaks = new Map<string, Streak>();

  constructor(
    /** Back-off after the first drop of a streak. @defaultValue 1000 */
    private readonly baseMs = 1000,
    /** Longest back-off. @defaultValue 30000 */
    private readonly maxMs = 30_000,
  ) {}

  /** A connection of `peer`'s runner dropped tasks it held; returns the back-off now in force. */
  dropped(peer: Pick<Peer, 'name' | 'address'>, now = Date.now()): number {
    for (const [key, s] of this.streaks) if (now > s.until + this.maxMs) this.streaks.delete(key);
    const key = runnerKey(peer);
    const s = this.streaks.get(key) ?? { since: now, drops: 0, until: now };
    s.drops++;
    const ms = Math.min(this.baseMs * 2 ** Math.min(s.drops - 1, 30), this.maxMs);
    s.until = now + ms;
    this.streaks.set(key, s);
    return ms;
  }

  /** Milliseconds `peer` must still wait before it gets work (0: none). */
  remaining(peer: Pick<Peer, 'name' | 'address' | 'connectedAt'>, now = Date.now()): number {
    const s = this.streaks.get(runnerKey(peer));
    if (!s || peer.connectedAt < s.since) return 0;
    return Math.max(0, s.until - now);
  }

  /** `peer` completed a task: if it connected during a streak, its runner is healthy again. */
  completed(peer: Pick<Peer, 'name' | 'address' | 'connectedAt'>): void {
    const key = runnerKey(peer);
    const s = this.streaks.get(key);
    if (s && peer.connectedAt >= s.since) this.streaks.delete(key);
  }
}
