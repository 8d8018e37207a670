import { createHash, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'socket.io';
import type { Config } from '../config/config.ts';
import { TaskmasterError } from '../errors.ts';

/** A connection was refused: no token, or a token that is not one of the configured ones. */
export class AuthError extends TaskmasterError {
  override readonly code = 'AUTH_FAILED';
}

/** A connection used an event its token does not allow (a feeder token asking for tasks). */
export class RoleError extends TaskmasterError {
  override readonly code = 'ROLE_NOT_ALLOWED';
}

export type Role = 'feeder' | 'runner';

/** What a connection may do. */
export interface Grant {
  roles: ReadonlySet<Role>;
  /** Which configured token it presented, for the log (never the token itself). */
  via: 'token' | 'feeder-token' | 'runner-token' | 'none';
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Compares in constant time (over digests, so the lengths do not leak either). */
function same(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * Who may connect. TASKMASTER_TOKEN grants both roles; TASKMASTER_FEEDER_TOKEN only `task:add`
 * and `task:watch`; TASKMASTER_RUNNER_TOKEN the runner events (and `task:add`, which runners
 * send from inside tasks). A role for which neither the main token nor its own token is set is
 * open: with only a feeder token configured, runners connect without one. A token that matches
 * none of the configured ones is refused even when a role is open, since it is surely a mistake.
 */
export class BridgeAuth {
  constructor(private readonly config: Pick<Config, 'token' | 'feederToken' | 'runnerToken'>) {}

  /** Whether any token is configured (otherwise every connection may do everything). */
  get enabled(): boolean {
    return Boolean(this.config.token || this.config.feederToken || this.config.runnerToken);
  }

  private openRoles(): Role[] {
    const { token, feederToken, runnerToken } = this.config;
    const open: Role[] = [];
    if (!token && !feederToken) open.push('feeder');
    if (!token && !runnerToken) open.push('runner');
    return open;
  }

  /** The grant for a presented token (undefined when none was presented); throws AuthError. */
  check(presented: string | undefined): Grant {
    const { token, feederToken, runnerToken } = this.config;
    if (presented === undefined || presented === '') {
      const open = this.openRoles();
      if (!open.length) {
        throw new AuthError(
          'authentication required: pass the token as auth.token (socket.io-client 3 and later) or as the query parameter "token" (older clients)',
        );
      }
      return { roles: new Set(open), via: 'none' };
    }
    if (token && same(presented, token)) return { roles: new Set<Role>(['feeder', 'runner']), via: 'token' };
    const roles = new Set<Role>(this.openRoles());
    let via: Grant['via'] | undefined;
    if (feederToken && same(presented, feederToken)) {
      roles.add('feeder');
      via = 'feeder-token';
    }
    if (runnerToken && same(presented, runnerToken)) {
      roles.add('runner');
      via = via ? 'token' : 'runner-token';
    }
    if (!via) {
      if (!this.enabled) return { roles: new Set<Role>(['feeder', 'runner']), via: 'none' };
      throw new AuthError('authentication failed: the token is not valid for this master');
    }
    return { roles, via };
  }
}

/** The token a client presented: `auth.token` (clients 3+), else `?token=` (clients 1.x, 2.x). */
export function presentedToken(socket: Pick<Socket, 'handshake'>): string | undefined {
  const fromAuth = (socket.handshake.auth as Record<string, unknown> | undefined)?.token;
  if (typeof fromAuth === 'string') return fromAuth;
  const fromQuery = socket.handshake.query?.token;
  if (typeof fromQuery === 'string') return fromQuery;
  if (Array.isArray(fromQuery) && typeof fromQuery[0] === 'string') return fromQuery[0];
  return undefined;
}
