import type { Peer } from './presence.ts';

/** What one runner's slots are doing. */
interface PeerSlots {
  /** Declared in `task:request`; undeclared (every 2016 runner): 1. */
  declared?: number;
  /** Slots waiting for a job: lined up, parked, or being offered one. */
  idle: number;
  /** Job ids the runner holds, one per busy slot. */
  readonly held: Set<string>;
}

/** The slots waiting on one queue. */
interface Line {
  /** One entry per waiting slot, longest-waiting first. */
  order: Peer[];
  /** Completions in flight, by runner. */
  readonly completing: Map<Peer, number>;
  /** Slots freed while their runner's completion is in flight, for the job it fetches (QueueFetcher.complete). */
  readonly parked: Map<Peer, number>;
}

/**
 * Runners' slots, and the only place they change. A runner has the slots it declared (one when
 * it declared none, as every 2016 runner); each is free (its runner has not asked for work),
 * waiting for a job of one queue, or holding one. Waiting slots line up per queue in arrival
 * order. A slot taken from the line to be offered a job still counts as waiting until it holds
 * the job, waits again or is lost, so that a request arriving meanwhile adds no slot in its place.
 */
export class RunnerSlots {
  private readonly peers = new WeakMap<Peer, PeerSlots>();
  private readonly lines = new Map<string, Line>();

  private of(peer: Peer): PeerSlots {
    let s = this.peers.get(peer);
    if (!s) this.peers.set(peer, (s = { idle: 0, held: new Set() }));
    return s;
  }

  private line(queue: string): Line {
    let l = this.lines.get(queue);
    if (!l) this.lines.set(queue, (l = { order: [], completing: new Map(), parked: new Map() }));
    return l;
  }

  /** `peer` runs `n` tasks at once from now on. */
  declare(peer: Peer, n: number): void {
    this.of(peer).declared = n;
  }

  /** The tasks `peer` runs at once: as declared, else 1. */
  capacity(peer: Peer): number {
    return this.of(peer).declared ?? 1;
  }

  /** Slots of `peer` waiting for a job. */
  idle(peer: Peer): number {
    return this.of(peer).idle;
  }

  /** The job ids `peer` holds. */
  held(peer: Peer): ReadonlySet<string> {
    return this.of(peer).held;
  }

  /** `peer`'s free slots start waiting on `queue`; returns how many did. */
  wait(peer: Peer, queue: string): number {
    const s = this.of(peer);
    const free = this.capacity(peer) - s.held.size - s.idle;
    if (free <= 0 || !peer.connected) return 0;
    s.idle += free;
    const line = this.line(queue);
    if (line.completing.has(peer)) line.parked.set(peer, (line.parked.get(peer) ?? 0) + free);
    else for (let i = 0; i < free; i++) line.order.push(peer);
    return free;
  }

  /** Slots lined up on `queue` (parked ones aside). */
  waiting(queue: string): number {
    return this.lines.get(queue)?.order.length ?? 0;
  }

  /** The longest-waiting slot of `queue` leaves the line to be offered a job. */
  next(queue: string): Peer | undefined {
    return this.lines.get(queue)?.order.shift();
  }

  /**
   * An offered slot waits again: at the front when the job it was offered ended before it got
   * there, at the back when its completion fetched none. Lost when its runner went away.
   */
  again(queue: string, peer: Peer, at: 'front' | 'back'): void {
    if (!peer.connected) return this.lose(peer);
    const order = this.line(queue).order;
    if (at === 'front') order.unshift(peer);
    else order.push(peer);
  }

  /** An offered slot holds `jobId` now. */
  take(peer: Peer, jobId: string): void {
    const s = this.of(peer);
    s.idle--;
    s.held.add(jobId);
  }

  /** An offered slot is gone: its runner went away or was backed off. */
  lose(peer: Peer): void {
    this.of(peer).idle--;
  }

  /** The slot that held `jobId` is free until its runner asks again. */
  free(peer: Peer, jobId: string): void {
    this.of(peer).held.delete(jobId);
  }

  /** Every lined-up or parked slot of `peer` stops waiting (offered ones are lost by their offer). */
  withdraw(peer: Peer): void {
    let n = 0;
    for (const line of this.lines.values()) {
      const before = line.order.length;
      line.order = line.order.filter((p) => p !== peer);
      n += before - line.order.length + (line.parked.get(peer) ?? 0);
      line.parked.delete(peer);
    }
    this.of(peer).idle -= n;
  }

  /** A completion of `peer`'s job on `queue` starts: slots the runner frees meanwhile are parked. */
  completing(queue: string, peer: Peer): void {
    const c = this.line(queue).completing;
    c.set(peer, (c.get(peer) ?? 0) + 1);
  }

  /** Takes a parked slot of `peer`, to be offered the job its completion fetches; false when none is parked. */
  unpark(queue: string, peer: Peer): boolean {
    const parked = this.line(queue).parked;
    const n = parked.get(peer) ?? 0;
    if (!n) return false;
    if (n > 1) parked.set(peer, n - 1);
    else parked.delete(peer);
    return true;
  }

  /** A completion ended: once none of `peer`'s is left on `queue`, its parked slots line up. */
  completed(queue: string, peer: Peer): void {
    const line = this.line(queue);
    const n = line.completing.get(peer)! - 1;
    if (n) return void line.completing.set(peer, n);
    line.completing.delete(peer);
    const parked = line.parked.get(peer) ?? 0;
    line.parked.delete(peer);
    if (peer.connected) for (let i = 0; i < parked; i++) line.order.push(peer);
    else this.of(peer).idle -= parked;
  }
}
