import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { hashTagOf } from '../src/queue/keys.ts';
import { isClusterUrl, parseClusterUrl } from '../src/queue/redis-url.ts';

describe('a Redis Cluster URL', () => {
  it('names seed nodes, credentials and TLS', () => {
    expect(isClusterUrl('redis+cluster://a:7000')).toBe(true);
    expect(isClusterUrl('redis://a:7000')).toBe(false);
    expect(parseClusterUrl('redis+cluster://10.0.0.1:7000,10.0.0.2:7001,node-c')).toEqual({
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7001 },
        { host: 'node-c', port: 6379 },
      ],
      username: undefined,
      password: undefined,
      tls: false,
    });
    expect(parseClusterUrl('rediss+cluster://app:p%40ss@[::1]:7000/')).toEqual({
      nodes: [{ host: '::1', port: 7000 }],
      username: 'app',
      password: 'p@ss',
      tls: true,
    });
    expect(parseClusterUrl('redis+cluster://:secret@h:1/0')).toMatchObject({ username: undefined, password: 'secret' });
  });

  it.each([
    ['redis+cluster://', /no node given/],
    ['redis+cluster://h:1,,h:2', /"" is not a node/],
    ['redis+cluster://h:99999', /"h:99999" is not a node/],
    ['redis+cluster://h:1/3', /nothing may follow the nodes but "\/" or "\/0", got "\/3"/],
  ])('refuses %s, saying what is wrong', (url, message) => {
    expect(() => parseClusterUrl(url)).toThrow(message);
    expect(() => loadConfig({ REDIS_URL: url, TASKMASTER_PREFIX: '{tm}' })).toThrow(
      /^REDIS_URL must be a cluster URL redis\+cluster:\/\/\[user:password@\]host:port/,
    );
  });

  it('hides its password in messages', () => {
    const load = () => loadConfig({ REDIS_URL: 'redis+cluster://u:hunter2secret@h:1/9', TASKMASTER_PREFIX: '{tm}' });
    expect(load).toThrow(/u:\*\*\*@h:1\/9/);
    expect(load).not.toThrow(/hunter2secret/);
  });

  it('is one of the forms a bad REDIS_URL is told about', () => {
    expect(() => loadConfig({ REDIS_URL: 'http://h:1' })).toThrow(/redis\+cluster:\/\//);
  });
});

describe('the hash tag of a prefix', () => {
  it('is read as Redis Cluster reads it: the first {…} that is not empty', () => {
    expect(hashTagOf('{taskmaster}')).toBe('taskmaster');
    expect(hashTagOf('app{tm}x{y}')).toBe('tm');
    expect(hashTagOf('taskmaster')).toBeUndefined();
    expect(hashTagOf('{}taskmaster{x}')).toBeUndefined();
    expect(hashTagOf('task{master')).toBeUndefined();
    expect(hashTagOf('task}master{')).toBeUndefined();
  });
});
