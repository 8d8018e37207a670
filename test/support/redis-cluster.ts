import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './redis-server.ts';

const HOST = '127.0.0.1';

/** One master of a TestRedisCluster: its redis-server process and data folder. */
interface ClusterNode {
  port: number;
  dir: string;
  proc: ChildProcess;
  output: string;
}

/**
 * A private Redis Cluster for tests: three masters (no replicas) on free ports, each with its own
 * folder, joined with `redis-cli --cluster create`. `url` is its Taskmaster cluster URL.
 */
export class TestRedisCluster {
  private constructor(private readonly nodes: ClusterNode[]) {}

  get ports(): number[] {
    return this.nodes.map((n) => n.port);
  }

  get url(): string {
    return `redis+cluster://${this.ports.map((p) => `${HOST}:${p}`).join(',')}`;
  }

  get pids(): number[] {
    return this.nodes.map((n) => n.proc.pid!);
  }

  static async start(masters = 3): Promise<TestRedisCluster> {
    const nodes: ClusterNode[] = [];
    const cluster = new TestRedisCluster(nodes);
    try {
      for (let i = 0; i < masters; i++) nodes.push(await startNode());
      await Promise.all(nodes.map(waitReady));
      const create = spawnSync(
        'redis-cli',
        ['--cluster', 'create', ...nodes.map((n) => `${HOST}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'],
        { encoding: 'utf8', timeout: 60_000 },
      );
      if (create.status !== 0) {
        throw new Error(`redis-cli --cluster create failed (${create.status}):\n${create.stdout}\n${create.stderr}`);
      }
      await cluster.waitClusterOk();
      return cluster;
    } catch (err) {
      await cluster.destroy();
      throw err;
    }
  }

  /** Until every node says `cluster_state:ok` and knows all the others: slots served everywhere. */
  private async waitClusterOk(): Promise<void> {
    const end = Date.now() + 30_000;
    for (;;) {
      const infos = this.nodes.map((n) => cli(n.port, 'CLUSTER', 'INFO'));
      const ok = infos.every(
        (i) => i.includes('cluster_state:ok') && i.includes(`cluster_known_nodes:${this.nodes.length}`),
      );
      if (ok) return;
      if (Date.now() > end) throw new Error(`cluster not ok within 30 s:\n${infos.join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops every node by its PID (SIGTERM) and removes their folders. */
  async destroy(): Promise<void> {
    await Promise.all(this.nodes.map(stopNode));
    for (const n of this.nodes) rmSync(n.dir, { recursive: true, force: true });
  }
}

async function startNode(): Promise<ClusterNode> {
  const port = await freePort();
  // The cluster bus port defaults to port + 10000, which a high free port would overflow.
  const busPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'taskmaster-cluster-'));
  const args = [
    ['--port', String(port)],
    ['--cluster-port', String(busPort)],
    ['--bind', HOST],
    ['--dir', dir],
    ['--cluster-enabled', 'yes'],
    ['--cluster-config-file', 'nodes.conf'],
    ['--cluster-node-timeout', '5000'],
    ['--appendonly', 'no'],
    ['--save', ''],
    ['--protected-mode', 'no'],
  ].flat();
  const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const node: ClusterNode = { port, dir, proc, output: '' };
  proc.stdout!.on('data', (d) => (node.output += d));
  proc.stderr!.on('data', (d) => (node.output += d));
  return node;
}

function waitReady(node: ClusterNode): Promise<void> {
  return new Promise((resolve, reject) => {
    const end = Date.now() + 10_000;
    const check = () => {
      if (node.output.includes('Ready to accept connections')) resolve();
      else if (node.proc.exitCode !== null) reject(new Error(`redis-server on ${node.port} exited: ${node.output}`));
      else if (Date.now() > end)
        reject(new Error(`redis-server on ${node.port} not ready within 10 s:\n${node.output}`));
      else setTimeout(check, 20);
    };
    check();
  });
}

function stopNode(node: ClusterNode): Promise<void> {
  const { proc } = node;
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill('SIGTERM');
  });
}

function cli(port: number, ...args: string[]): string {
  const out = spawnSync('redis-cli', ['-h', HOST, '-p', String(port), ...args], { encoding: 'utf8' });
  return out.stdout ?? '';
}
