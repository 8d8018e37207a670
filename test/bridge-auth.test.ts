import { describe, expect, it } from 'vitest';
import { BridgeAuth } from '../src/bridge/auth.ts';
import { useHarness, waitFor } from './support/harness.ts';
import { ALL_CLIENTS, OLD_CLIENTS, bridge, connect, type TestClient } from './fixtures/bridge-clients.ts';

/** Waits until a refused client has been told and its connection is closed. */
async function refused(c: TestClient): Promise<string> {
  if (c.version === '4.8.1') {
    const [err] = (await c.next('connect_error')) as [Error & { data?: { code: string } }];
    expect(err.data?.code).toBe('AUTH_FAILED');
    return err.message;
  }
  const [message] = await c.next('error');
  // Socket.IO leaves a refused protocol-3 client's connection open; the bridge closes it.
  await c.next('disconnect');
  expect(c.socket.connected).toBe(false);
  return message as string;
}

describe('bridge: auth with TASKMASTER_TOKEN', () => {
  const h = useHarness({ TASKMASTER_TOKEN: 'main-secret' });

  for (const version of ALL_CLIENTS) {
    it(`socket.io-client ${version}: token accepted, wrong or missing token refused with a clear message`, async () => {
      const b = await bridge(h);
      const good = await connect(h, version, b.url, { token: 'main-secret' });
      const answer = (await good.ask('task:add', { module: 'record', params: [version] })) as { ok: boolean };
      expect(answer.ok).toBe(true);

      const wrong = await connect(h, version, b.url, { token: 'guess', wait: false });
      expect(await refused(wrong)).toBe('authentication failed: the token is not valid for this master');
      const none = await connect(h, version, b.url, { wait: false });
      expect(await refused(none)).toMatch(
        /^authentication required: pass the token as auth.token .* or as the query parameter "token"/,
      );
      expect(wrong.count('connect')).toBe(0);
      expect(none.count('connect')).toBe(0);
      expect(b.peers()).toHaveLength(1);
      // The good connection is unaffected.
      const again = (await good.ask('task:add', { module: 'record', params: [version, 2] })) as { ok: boolean };
      expect(again.ok).toBe(true);
    });
  }

  it('socket.io-client 4.8.1 may also send the token in the query string', async () => {
    const b = await bridge(h);
    const c = await connect(h, '4.8.1', b.url, { token: 'main-secret', tokenIn: 'query' });
    expect(c.socket.connected).toBe(true);
  });

  for (const version of OLD_CLIENTS) {
    it(`socket.io-client ${version}: a refused client that keeps reconnecting is refused each time`, async () => {
      const b = await bridge(h);
      const c = await connect(h, version, b.url, { token: 'guess', wait: false, reconnection: true });
      await c.next('error', 10_000, 0);
      await c.next('error', 10_000, 1);
      expect(c.count('connect')).toBe(0);
      c.close();
      // None of the refused attempts is kept as a client.
      await waitFor(() => b.peers().length === 0, 'no client to be kept');
    });
  }
});

describe('bridge: separate feeder and runner tokens', () => {
  const h = useHarness({ TASKMASTER_FEEDER_TOKEN: 'feed-me', TASKMASTER_RUNNER_TOKEN: 'run-me' });

  it('a feeder token may add but not take tasks; a runner token may take and add', async () => {
    const b = await bridge(h);
    const feeder = await connect(h, '1.7.4', b.url, { token: 'feed-me' });
    const runner = await connect(h, '4.8.1', b.url, { token: 'run-me' });
    expect(((await feeder.ask('task:add', { module: 'record', params: [1] })) as { ok: boolean }).ok).toBe(true);
    const no = (await feeder.ask('task:request', 'sneaky')) as { ok: boolean; code: string; message: string };
    expect(no).toMatchObject({ ok: false, code: 'ROLE_NOT_ALLOWED' });
    expect(no.message).toMatch(/not a runner token/);
    expect((await feeder.next('task:error'))[0]).toBe(no.message);

    runner.emit('task:request', 'r1');
    const [json] = await runner.next('task:send');
    expect(JSON.parse(json as string).params).toEqual([1]);
    expect(((await runner.ask('task:add', { module: 'record', params: [2] })) as { ok: boolean }).ok).toBe(true);

    const swapped = await connect(h, '2.5.0', b.url, { token: 'main?', wait: false });
    expect(await refused(swapped)).toMatch(/token is not valid/);
    const none = await connect(h, '4.8.1', b.url, { wait: false });
    expect(await refused(none)).toMatch(/authentication required/);
  });

  it('BridgeAuth: a role with no token of its own and no main token is open', () => {
    const onlyFeeder = new BridgeAuth({ feederToken: 'f' });
    expect([...onlyFeeder.check(undefined).roles]).toEqual(['runner']);
    expect([...onlyFeeder.check('f').roles].sort()).toEqual(['feeder', 'runner']);
    expect(() => onlyFeeder.check('x')).toThrow(/not valid/);
    const main = new BridgeAuth({ token: 't', runnerToken: 'r' });
    expect(() => main.check(undefined)).toThrow(/authentication required/);
    expect([...main.check('r').roles]).toEqual(['runner']);
    expect([...main.check('t').roles].sort()).toEqual(['feeder', 'runner']);
    const open = new BridgeAuth({});
    expect(open.enabled).toBe(false);
    expect([...open.check('anything').roles].sort()).toEqual(['feeder', 'runner']);
  });
});
