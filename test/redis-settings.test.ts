/**
 * Where Redis is (LENSFLEET_REDIS_*, REDIS_URL): each mode's settings, every contradiction
 * rejected with a message naming the settings (never a password), the queue prefix of each mode,
 * and descriptions of Redis that carry no credentials.
 */
import { describe, expect, it } from 'vitest';
import { QUEUE_PREFIX, queuePrefix } from '../queues/contract.js';
import { createLensQueue, isClusterConnection } from '../queues/producer.js';
import { loadRedisSettings, loadWorkerConfig } from '../src/config.js';
import { LensfleetError } from '../src/errors.js';
import { describeRedis, prefixFor, redisConnection, safeRedisMessage } from '../src/redis.js';
import { redisUrl } from './support/harness.js';

function configError(env: Record<string, string>): LensfleetError {
  try {
    loadWorkerConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(LensfleetError);
    expect((err as LensfleetError).code).toBe('INVALID_CONFIG');
    return err as LensfleetError;
  }
  throw new Error('expected INVALID_CONFIG');
}

const CLUSTER = { LENSFLEET_REDIS_MODE: 'cluster', LENSFLEET_REDIS_NODES: '10.0.0.1:7000,10.0.0.2:7000' };
const SENTINEL = { LENSFLEET_REDIS_MODE: 'sentinel', LENSFLEET_REDIS_NODES: 's1:26379,s2:26379,s3:26379', LENSFLEET_REDIS_SENTINEL_MASTER: 'lf-master' };

describe('Redis settings', () => {
  it('standalone by default, on REDIS_URL; cluster and sentinel from their own settings', () => {
    expect(loadRedisSettings({})).toMatchObject({ mode: 'standalone' });
    expect(loadRedisSettings({ ...CLUSTER, LENSFLEET_REDIS_PASSWORD: 'pw-of-nodes' })).toMatchObject({
      mode: 'cluster',
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7000 },
      ],
    });
    expect(loadRedisSettings(SENTINEL)).toMatchObject({ mode: 'sentinel', masterName: 'lf-master', sentinels: [{ host: 's1', port: 26379 }, {}, {}] });
  });

  it.each([
    ['standalone with nodes', { LENSFLEET_REDIS_NODES: 'n1:7000' }, /^LENSFLEET_REDIS_NODES is set, but LENSFLEET_REDIS_MODE=standalone reads only REDIS_URL/],
    [
      'standalone with a master name and a password',
      { LENSFLEET_REDIS_SENTINEL_MASTER: 'm', LENSFLEET_REDIS_PASSWORD: 'S3CRET-pw' },
      /^LENSFLEET_REDIS_SENTINEL_MASTER, LENSFLEET_REDIS_PASSWORD are set, but LENSFLEET_REDIS_MODE=standalone/,
    ],
    ['cluster without nodes', { LENSFLEET_REDIS_MODE: 'cluster' }, /^LENSFLEET_REDIS_MODE=cluster needs LENSFLEET_REDIS_NODES/],
    [
      'cluster with a REDIS_URL',
      { ...CLUSTER, REDIS_URL: 'redis://:S3CRET-pw@r:6379' },
      /^REDIS_URL is set, but LENSFLEET_REDIS_MODE=cluster .*unset REDIS_URL$/,
    ],
    [
      'cluster with a master name',
      { ...CLUSTER, LENSFLEET_REDIS_SENTINEL_MASTER: 'm' },
      /^LENSFLEET_REDIS_SENTINEL_MASTER is set, but LENSFLEET_REDIS_MODE=cluster has no sentinels/,
    ],
    [
      'cluster with a sentinel password',
      { ...CLUSTER, LENSFLEET_REDIS_SENTINEL_PASSWORD: 'S3CRET-pw' },
      /^LENSFLEET_REDIS_SENTINEL_PASSWORD is set, but LENSFLEET_REDIS_MODE=cluster/,
    ],
    [
      'sentinel without sentinels',
      { LENSFLEET_REDIS_MODE: 'sentinel', LENSFLEET_REDIS_SENTINEL_MASTER: 'm' },
      /^LENSFLEET_REDIS_MODE=sentinel needs LENSFLEET_REDIS_NODES/,
    ],
    ['sentinel without a master name', { LENSFLEET_REDIS_MODE: 'sentinel', LENSFLEET_REDIS_NODES: 's1:26379' }, /needs LENSFLEET_REDIS_SENTINEL_MASTER/],
    ['sentinel with a REDIS_URL', { ...SENTINEL, REDIS_URL: 'redis://:S3CRET-pw@r:6379' }, /^REDIS_URL is set, but LENSFLEET_REDIS_MODE=sentinel/],
    [
      'an unknown mode',
      { LENSFLEET_REDIS_MODE: 'replicated' },
      /^LENSFLEET_REDIS_MODE="replicated": LENSFLEET_REDIS_MODE must be one of standalone\|cluster\|sentinel$/,
    ],
    ['a node without a port', { ...CLUSTER, LENSFLEET_REDIS_NODES: 'n1' }, /^LENSFLEET_REDIS_NODES="n1": LENSFLEET_REDIS_NODES: "n1" is not host:port/],
    ['a port 0', { ...CLUSTER, LENSFLEET_REDIS_NODES: 'n1:7000,n2:0' }, /"n2:0" is not host:port/],
    ['a port above 65535', { ...CLUSTER, LENSFLEET_REDIS_NODES: 'n1:65536' }, /"n1:65536" is not host:port/],
    ['an IPv6 address without brackets', { ...CLUSTER, LENSFLEET_REDIS_NODES: '::1:7000' }, /"::1:7000" is not host:port \(an IPv6 address in brackets/],
    ['an empty list', { ...CLUSTER, LENSFLEET_REDIS_NODES: ' , ' }, /LENSFLEET_REDIS_NODES lists no host:port/],
  ])('%s is INVALID_CONFIG naming the setting', (_what, env, message) => {
    const err = configError(env);
    expect(err.message).toMatch(message);
    expect(err.message).not.toContain('S3CRET');
  });

  it('the edges of a valid node list: port 1 and 65535, an IPv6 address in brackets, blanks around entries', () => {
    expect(loadRedisSettings({ ...CLUSTER, LENSFLEET_REDIS_NODES: ' a:1 ,[fe80::1]:65535 ' })).toMatchObject({
      nodes: [
        { host: 'a', port: 1 },
        { host: 'fe80::1', port: 65535 },
      ],
    });
  });
});

describe('the queue prefix', () => {
  it("is BullMQ's default on one server and behind Sentinel (existing queues stay the same queue), the queue's hash tag on a Cluster", () => {
    expect(QUEUE_PREFIX).toBe('bull');
    expect(prefixFor(loadRedisSettings({}), 'lens-queries')).toBe('bull');
    expect(prefixFor(loadRedisSettings(SENTINEL), 'lens-queries')).toBe('bull');
    expect(prefixFor(loadRedisSettings(CLUSTER), 'lens-queries')).toBe('{lens-queries}');
    expect(queuePrefix('q2', true)).toBe('{q2}');
  });

  it('the producer SDK tells a Cluster connection by the client itself (test/redis-cluster.test.ts adds on one)', () => {
    const cluster = redisConnection(loadRedisSettings(CLUSTER), 'commands', { lazyConnect: true });
    const sentinel = redisConnection(loadRedisSettings(SENTINEL), 'commands', { lazyConnect: true });
    expect([isClusterConnection(cluster), isClusterConnection(sentinel), isClusterConnection({ host: 'h' })]).toEqual([true, false, false]);
    cluster.disconnect();
    sentinel.disconnect();
  });

  it('a queue of the producer SDK on one server uses bull, as the worker does', async () => {
    const queue = createLensQueue({ connection: { url: redisUrl() }, name: 'q_prefix' });
    expect([queue.opts.prefix, queue.keys.wait]).toEqual(['bull', 'bull:q_prefix:wait']);
    await queue.close();
  });
});

describe('describing Redis', () => {
  it('names where Redis is, never a user or a password', () => {
    const pw = 'S3CRET-pw';
    const standalone = loadRedisSettings({ REDIS_URL: `redis://user:${pw}@r.example:6380/2` });
    const cluster = loadRedisSettings({ ...CLUSTER, LENSFLEET_REDIS_USERNAME: 'lf', LENSFLEET_REDIS_PASSWORD: pw });
    const sentinel = loadRedisSettings({ ...SENTINEL, LENSFLEET_REDIS_PASSWORD: pw, LENSFLEET_REDIS_SENTINEL_PASSWORD: `${pw}-s` });
    expect(describeRedis(standalone)).toBe('redis://r.example:6380/2');
    expect(describeRedis(cluster)).toBe('cluster 10.0.0.1:7000,10.0.0.2:7000');
    expect(describeRedis(sentinel)).toBe('sentinel master lf-master via s1:26379,s2:26379,s3:26379');
    const leaky = new Error(`cannot connect to redis://user:${pw}@r.example:6380/2 with ${pw} or ${pw}-s`);
    for (const s of [standalone, cluster, sentinel]) expect(safeRedisMessage(leaky, s)).not.toContain(s.mode === 'sentinel' ? `${pw}-s` : pw);
    expect(safeRedisMessage(leaky, standalone)).toBe('cannot connect to redis://r.example:6380/2 with *** or ***-s');
    expect(safeRedisMessage(leaky, sentinel)).not.toContain(pw);
  });
});
