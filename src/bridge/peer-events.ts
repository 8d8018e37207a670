import type { Socket } from 'socket.io';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { AuthError, presentedToken, type BridgeAuth, type Grant, type Role } from './auth.ts';
import type { AddAnswer, FeederHandlers } from './feeder-handlers.ts';
import { escapeNonAscii } from './legacy-shape.ts';
import type { Peer, Presence } from './presence.ts';
import type { RunnerAnswer, RunnerHandlers } from './runner-handlers.ts';
import type { RunnerLeases } from './runner-leases.ts';
import type { RunnerSlots } from './runner-slots.ts';
import type { Watchers } from './watchers.ts';

type Ack = (answer: unknown) => void;

/** Splits Socket.IO's trailing acknowledgement callback from the event's arguments. */
function withAck(args: unknown[]): { args: unknown[]; ack?: Ack } {
  const last = args[args.length - 1];
  return typeof last === 'function' ? { args: args.slice(0, -1), ack: last as Ack } : { args };
}

function handshakeString(socket: Socket, key: string): string | undefined {
  const a = (socket.handshake.auth as Record<string, unknown> | undefined)?.[key];
  if (typeof a === 'string' && a) return a.slice(0, 200);
  const q = socket.handshake.query?.[key];
  return typeof q === 'string' && q ? q.slice(0, 200) : undefined;
}

const escaped = new WeakSet<object>();

/**
 * Protocol-3 clients get every message with non-ASCII characters escaped (see escapeNonAscii).
 * Engine.IO's `packetCreate` is emitted before a packet is queued, with the packet itself.
 */
function escapeForOldClient(socket: Socket): void {
  const conn = socket.conn;
  if (conn.protocol !== 3 || escaped.has(conn)) return;
  escaped.add(conn);
  conn.on('packetCreate', (packet: { type: string; data?: unknown }) => {
    if (packet.type === 'message' && typeof packet.data === 'string') packet.data = escapeNonAscii(packet.data);
  });
}

/**
 * Checks the token at the handshake. A refused current client gets `connect_error` with the
 * message; a refused 1.x/2.x client gets an `error` event with it, but Socket.IO leaves its
 * connection open, so it is closed here once the refusal has been sent.
 */
export function refuser(auth: BridgeAuth, log: Logger) {
  return (socket: Socket, next: (err?: Error) => void) => {
    escapeForOldClient(socket);
    try {
      socket.data.grant = auth.check(presentedToken(socket));
      next();
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      log.warn(
        { address: socket.handshake.address, protocol: socket.conn.protocol, reason: err.message },
        'connection refused',
      );
      const refusal = new Error(err.message) as Error & { data?: unknown };
      // Socket.IO sends a protocol-3 client `err.data` when set, else the message: keep it plain.
      if (socket.conn.protocol !== 3) refusal.data = { code: err.code };
      next(refusal);
      if (socket.conn.protocol === 3) setTimeout(() => socket.conn.close(), 50).unref();
    }
  };
}

export interface ConnectionDeps {
  bridgeId: string;
  config: Config;
  log: Logger;
  peers: Set<Peer>;
  presence: Presence;
  leases: RunnerLeases;
  slots: RunnerSlots;
  watchers: Watchers;
  feeders: FeederHandlers;
  runners: RunnerHandlers;
  /** Keeps a disconnect's clean-up promise so closing the bridge can wait for it. */
  track(p: Promise<unknown>): void;
}

/** Wires one connected socket: its peer record, its log line, and the protocol's events. */
export function connectionHandler(d: ConnectionDeps) {
  return (socket: Socket) => {
    const grant = socket.data.grant as Grant;
    const hint = handshakeString(socket, 'role');
    const peer: Peer = {
      socket,
      id: `${d.bridgeId}/${socket.id}`,
      grant,
      role: hint === 'runner' || hint === 'feeder' ? hint : grant.roles.size === 1 ? [...grant.roles][0] : undefined,
      name: handshakeString(socket, 'name'),
      // An IPv4 client of a dual-stack server, as people write its address.
      address: socket.handshake.address.replace(/^::ffff:(?=\d+\.)/, ''),
      protocol: socket.conn.protocol,
      connectedAt: Date.now(),
      connected: true,
      queues: new Set(),
      modules: [],
      added: 0,
    };
    d.peers.add(peer);
    const log = d.log.child({ client: peer.id });
    log.info(
      {
        role: peer.role ?? 'unknown until its first event',
        name: peer.name,
        address: peer.address,
        forwardedFor: socket.handshake.headers['x-forwarded-for'],
        protocol: peer.protocol,
        clientVersion:
          peer.protocol === 3
            ? 'socket.io-client 1.x or 2.x (Engine.IO 3)'
            : 'socket.io-client 3.x or later (Engine.IO 4)',
        transport: socket.conn.transport.name,
        userAgent: socket.handshake.headers['user-agent'],
        auth: grant.via,
      },
      'client connected',
    );
    d.presence.touch(peer);

    const becomes = (role: Role) => {
      if (peer.role === 'runner' || peer.role === role) return;
      peer.role = role;
      log.info({ role, name: peer.name }, `client is a ${role}`);
      d.presence.touch(peer);
    };
    const allowed = (role: Role, event: string, ack?: Ack): boolean => {
      if (grant.roles.has(role)) return true;
      const message = `${event} refused: this connection's token is not a ${role} token`;
      log.warn({ event }, message);
      socket.emit('task:error', message);
      ack?.({ ok: false, code: 'ROLE_NOT_ALLOWED', message });
      return false;
    };
    const reply = (ack: Ack | undefined, answer: RunnerAnswer | AddAnswer | object) => ack?.(answer);
    const failed = (event: string, ack?: Ack) => (err: unknown) => {
      log.error({ err, event }, `could not handle ${event}`);
      reply(ack, { ok: false, message: `${event} failed on the master: ${(err as Error).message}` });
    };

    socket.on('task:add', (...raw: unknown[]) => {
      const { args, ack } = withAck(raw);
      becomes('feeder');
      d.feeders.add(peer, args[0]).then((answer) => reply(ack, answer), failed('task:add', ack));
    });
    socket.on('task:watch', (...raw: unknown[]) => {
      const { args, ack } = withAck(raw);
      becomes('feeder');
      d.watchers.watch(peer, args[0]).then(
        (answer) => {
          if (!answer.ok) socket.emit('task:watch:failed', { message: answer.message });
          reply(ack, answer);
        },
        failed('task:watch', ack),
      );
    });
    socket.on('task:request', (...raw: unknown[]) => {
      const { args, ack } = withAck(raw);
      if (!allowed('runner', 'task:request', ack)) return;
      becomes('runner');
      const answer = d.runners.request(peer, args[0]);
      if (!answer.ok) {
        log.warn({ reason: answer.message }, 'task:request refused');
        socket.emit('task:error', answer.message);
      }
      reply(ack, answer);
    });
    socket.on('task:done', (...raw: unknown[]) => {
      const { args, ack } = withAck(raw);
      if (!allowed('runner', 'task:done', ack)) return;
      d.runners.done(peer, args[0], args[1]).then((answer) => reply(ack, answer), failed('task:done', ack));
    });
    socket.on('task:error', (...raw: unknown[]) => {
      const { args, ack } = withAck(raw);
      if (!allowed('runner', 'task:error', ack)) return;
      d.runners.error(peer, args[0], args[1]).then((answer) => reply(ack, answer), failed('task:error', ack));
    });
    socket.on('error', (err) => log.warn({ err }, 'socket error'));
    socket.on('disconnect', (reason) => {
      peer.connected = false;
      d.peers.delete(peer);
      log.info({ reason, role: peer.role, name: peer.name, held: d.slots.held(peer).size }, 'client disconnected');
      d.watchers.forget(peer);
      d.track(
        d.leases
          .release(peer)
          .catch((err) => log.error({ err }, 'could not give back the tasks of a disconnected runner'))
          .finally(() => d.presence.remove(peer)),
      );
    });
  };
}
