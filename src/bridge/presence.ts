import type { Socket } from 'socket.io';
import type { Logger } from 'pino';
import type { ConsumerInfo, ConsumerRegistry } from '../workers/registry.ts';
import type { Grant, Role } from './auth.ts';
import type { RunnerSlots } from './runner-slots.ts';

/** One connected Socket.IO client, as the bridge tracks it. */
export interface Peer {
  readonly socket: Socket;
  /** Registry id: the bridge's id and the socket's, so any master's status page can list it. */
  readonly id: string;
  readonly grant: Grant;
  /** Set by its first event that says: `task:request` makes a runner, `task:add` or `task:watch` a feeder. */
  role?: Role;
  name?: string;
  readonly address: string;
  /** Engine.IO protocol: 3 for socket.io-client 1.x and 2.x, 4 for 3.x and later. */
  readonly protocol: number;
  readonly connectedAt: number;
  connected: boolean;
  /** Queues this runner asked for work from. */
  readonly queues: Set<string>;
  /** Modules this runner says it has (optional in `task:request`). */
  modules: string[];
  /** Tasks this feeder added (new ones, not duplicates). */
  added: number;
}

/** A runner as `ranBy` and the logs name it: its name, if it gave one, and the address it connects from. */
export function runnerLabel(peer: Pick<Peer, 'name' | 'address'>): string {
  return peer.name ? `${peer.name}@${peer.address}` : peer.address;
}

/** What the registry holds for a bridge client, beyond what a worker process announces. */
export interface PeerInfo extends ConsumerInfo {
  /** The bridge (master) the client is connected to. */
  bridge: string;
  address: string;
  protocol: number;
  idle: number;
  added: number;
}

/**
 * Publishes the connected runners and feeders in the consumer registry (Redis, with a TTL), so
 * that the status page of any master lists them with what each holds. One timer per bridge
 * refreshes every entry; a change (a task handed out, finished or added) is published within
 * `flushMs` rather than at once, so a busy runner costs one write per flush, not per task.
 */
export class Presence {
  private readonly peers = new Set<Peer>();
  private readonly dirty = new Set<Peer>();
  private beat?: NodeJS.Timeout;
  private flushTimer?: NodeJS.Timeout;

  constructor(
    private readonly registry: ConsumerRegistry,
    private readonly bridgeId: string,
    /** What runners hold and how many slots they have, as published. */
    private readonly slots: RunnerSlots,
    private readonly log: Logger,
    /** @defaultValue 5000 */
    private readonly everyMs = 5000,
    /** @defaultValue 1000 */
    private readonly flushMs = 1000,
  ) {}

  start(): void {
    this.beat = setInterval(() => void this.publish([...this.peers].filter((p) => p.role)), this.everyMs);
    this.beat.unref();
  }

  /** Marks a client as changed; it is published with the next flush. */
  touch(peer: Peer): void {
    if (!peer.connected || !peer.role) return;
    this.peers.add(peer);
    this.dirty.add(peer);
    this.flushTimer ??= setTimeout(() => {
      this.flushTimer = undefined;
      const batch = [...this.dirty];
      this.dirty.clear();
      void this.publish(batch);
    }, this.flushMs);
  }

  async remove(peer: Peer): Promise<void> {
    this.peers.delete(peer);
    this.dirty.delete(peer);
    await this.registry
      .remove(peer.id)
      .catch((err) => this.log.warn({ err, peer: peer.id }, 'could not remove a client from the registry'));
  }

  info(peer: Peer): PeerInfo {
    return {
      id: peer.id,
      kind: peer.role ?? 'feeder',
      host: peer.address,
      pid: 0,
      queues: [...peer.queues],
      modules: peer.modules,
      concurrency: peer.role === 'runner' ? this.slots.capacity(peer) : 0,
      startedAt: peer.connectedAt,
      running: [...this.slots.held(peer)],
      name: peer.name,
      bridge: this.bridgeId,
      address: peer.address,
      protocol: peer.protocol,
      idle: this.slots.idle(peer),
      added: peer.added,
    };
  }

  private async publish(peers: Peer[]): Promise<void> {
    await Promise.all(
      peers.filter((p) => p.connected && p.role).map((p) => this.registry.announce(this.info(p), this.everyMs * 3)),
    ).catch((err) => this.log.warn({ err }, 'could not publish connected clients in the registry'));
  }

  async close(): Promise<void> {
    clearInterval(this.beat);
    clearTimeout(this.flushTimer);
    await Promise.all([...this.peers].map((p) => this.remove(p)));
  }
}
