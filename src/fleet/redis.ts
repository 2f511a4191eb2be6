/**
 * Running the fleet's Lua scripts through ioredis: `defineCommand` sends EVALSHA and falls back
 * to EVAL when Redis does not know the script yet (after a restart or a failover), so each
 * script crosses the network once per connection, not once per call.
 */
import type { RedisClient } from '../redis.js';

export type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;

/**
 * A script as a function of its keys then its arguments. With `numberOfKeys` omitted the first
 * argument is the number of keys (a script over a variable number of keys).
 */
export function defineScript(redis: RedisClient, name: string, lua: string, numberOfKeys?: number): ScriptCall {
  if (!(name in redis)) redis.defineCommand(name, numberOfKeys === undefined ? { lua } : { lua, numberOfKeys });
  const command = (redis as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>)[name]!;
  return (...args) => command.apply(redis, args);
}
