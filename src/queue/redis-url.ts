/** Schemes of a Redis Cluster URL: seed nodes, plain or over TLS. */
export const CLUSTER_SCHEMES = ['redis+cluster://', 'rediss+cluster://'] as const;

/** How a cluster URL is written, for messages. */
export const CLUSTER_URL_FORM = 'redis+cluster://[user:password@]host:port[,host:port…] (rediss+cluster:// for TLS)';

/** Where Redis Cluster is reached: some of its nodes (it finds the others), and how to log in. */
export interface ClusterTarget {
  nodes: { host: string; port: number }[];
  username?: string;
  password?: string;
  tls: boolean;
}

export function isClusterUrl(url: string): boolean {
  return /^rediss?\+cluster:\/\//i.test(url);
}

/**
 * Reads a cluster URL, `redis+cluster://[user:password@]host:port[,host:port…]`: one node is
 * enough to find the cluster, more keep the start working while one is down. Throws an Error
 * saying what is wrong (without the password).
 */
export function parseClusterUrl(url: string): ClusterTarget {
  const scheme = /^(rediss?)\+cluster:\/\//i.exec(url);
  if (!scheme) throw new Error(`not a cluster URL: ${CLUSTER_URL_FORM}`);
  let rest = url.slice(scheme[0].length);
  let username: string | undefined;
  let password: string | undefined;
  // Credentials run to the last "@", as in a one-server URL.
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = userinfo.indexOf(':');
    username = decode(colon < 0 ? userinfo : userinfo.slice(0, colon)) || undefined;
    password = colon < 0 ? undefined : decode(userinfo.slice(colon + 1));
  }
  const path = rest.search(/[/?#]/);
  if (path >= 0) {
    const tail = rest.slice(path);
    // Redis Cluster has database 0 only.
    if (tail !== '/' && tail !== '/0') throw new Error(`nothing may follow the nodes but "/" or "/0", got "${tail}"`);
    rest = rest.slice(0, path);
  }
  if (!rest) throw new Error('no node given');
  const nodes = rest.split(',').map(node);
  return { nodes, username, password, tls: scheme[1]!.toLowerCase() === 'rediss' };
}

function node(text: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+)(?::(\d{1,5}))?$/.exec(text);
  const port = m?.[2] === undefined ? 6379 : Number(m[2]);
  if (!m || port < 1 || port > 65535) throw new Error(`"${text}" is not a node (host:port)`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    // Not percent-encoded: taken as written, as the WHATWG URL parser does.
    return part;
  }
}
