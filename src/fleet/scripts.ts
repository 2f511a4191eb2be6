/**
 * The fleet's Lua scripts. Each runs atomically in Redis, so a lease count can never pass a cap
 * however many workers ask at once. Times come from Redis's own clock (`TIME`), so the workers'
 * clocks never matter; Redis ≥ 5 replicates a script's effects, which makes `TIME` safe here.
 *
 * Lease ids are `<worker>|<n>`; a worker id never contains `|`.
 */

/** Milliseconds on Redis's clock. */
const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * A worker's fair share of a tenant's cap, and whether other workers wait for a lease. The
 * contenders are the workers holding a lease or waiting for one (and the caller), sorted; each
 * gets cap / contenders, and the remainder goes to the contenders from a start that moves every
 * `rotate` ms — so with more contenders than the cap each gets its turn. Shares add up to the cap.
 * Returns share, whether others wait, and how many leases the caller holds.
 */
const SHARE = `
local function share_of(leases, wanters, me, cap, now, rotate)
  local seen, list, mine = {}, {}, 0
  for _, id in ipairs(redis.call('ZRANGE', leases, 0, -1)) do
    local w = string.match(id, '^(.*)|')
    if w then
      if w == me then mine = mine + 1 end
      if not seen[w] then seen[w] = true; list[#list + 1] = w end
    end
  end
  local others_want = false
  for _, w in ipairs(redis.call('ZRANGE', wanters, 0, -1)) do
    if w ~= me then others_want = true end
    if not seen[w] then seen[w] = true; list[#list + 1] = w end
  end
  if not seen[me] then list[#list + 1] = me end
  table.sort(list)
  local n, rank = #list, 0
  for i, w in ipairs(list) do if w == me then rank = i - 1 end end
  local share = math.floor(cap / n)
  if (rank - math.floor(now / rotate)) % n < cap % n then share = share + 1 end
  return share, others_want, mine
end
`;

/**
 * ACQUIRE — take up to N leases of one tenant for one worker.
 * KEYS: leases, wanters. ARGV: cap, ttlMs, wantTtlMs, rotateMs, channel, tenant, worker, id1…idN.
 * Drops expired leases and wanters, then grants min(N, room) where room is what the cap leaves —
 * and, while other workers wait, no more than the caller's fair share. A caller left short is
 * recorded as a wanter; a new wanter is announced (`wanted <tenant> <worker>`) so holders give
 * back idle connections at once. Returns {granted, share, othersWant (0|1)}.
 */
export const ACQUIRE_LUA = `${NOW}${SHARE}
local cap, ttl, want_ttl, rotate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local channel, tenant, me = ARGV[5], ARGV[6], ARGV[7]
local asked = #ARGV - 7
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local share, others_want, mine = share_of(KEYS[1], KEYS[2], me, cap, now, rotate)
local room = cap - redis.call('ZCARD', KEYS[1])
if others_want then room = math.min(room, share - mine) end
local granted = math.max(0, math.min(room, asked))
for i = 1, granted do redis.call('ZADD', KEYS[1], now + ttl, ARGV[7 + i]) end
if granted > 0 then redis.call('PEXPIRE', KEYS[1], ttl * 2) end
if granted < asked then
  if redis.call('ZADD', KEYS[2], now + want_ttl, me) == 1 then
    redis.call('PUBLISH', channel, 'wanted ' .. tenant .. ' ' .. me)
  end
  redis.call('PEXPIRE', KEYS[2], want_ttl * 2)
else
  redis.call('ZREM', KEYS[2], me)
end
return {granted, share, others_want and 1 or 0}
`;

/**
 * RENEW — extend every lease one worker holds, over all its tenants, in one call (one per
 * worker per renewal period, however many connections it has).
 * KEYS: per tenant, leases and wanters. ARGV: ttlMs, rotateMs, worker, then per tenant: cap, n,
 * id1…idn. A lease that expired meanwhile (a renewal missed for longer than the TTL) is taken
 * again if the cap has room, else reported lost (its connection must close). Returns, per
 * tenant, {share, othersWant (0|1), {lost ids}}.
 */
export const RENEW_LUA = `${NOW}${SHARE}
local ttl, rotate, me = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local out, a = {}, 4
for k = 1, #KEYS, 2 do
  local leases, wanters = KEYS[k], KEYS[k + 1]
  local cap, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', wanters, '-inf', now)
  local lost = {}
  for i = 0, n - 1 do
    local id = ARGV[a + i]
    if redis.call('ZSCORE', leases, id) or redis.call('ZCARD', leases) < cap then
      redis.call('ZADD', leases, now + ttl, id)
    else
      lost[#lost + 1] = id
    end
  end
  a = a + n
  if n > 0 then redis.call('PEXPIRE', leases, ttl * 2) end
  local share, others_want = share_of(leases, wanters, me, cap, now, rotate)
  out[#out + 1] = {share, others_want and 1 or 0, lost}
end
return out
`;

/**
 * RELEASE — give leases back (their connections have closed).
 * KEYS: leases, wanters. ARGV: channel, tenant, id1…idN. When workers wait for this tenant,
 * announces `freed <tenant>` so they ask again at once instead of at their next retry.
 * Returns how many leases were still held.
 */
export const RELEASE_LUA = `
local removed = redis.call('ZREM', KEYS[1], unpack(ARGV, 3))
if removed > 0 and redis.call('ZCARD', KEYS[2]) > 0 then
  redis.call('PUBLISH', ARGV[1], 'freed ' .. ARGV[2])
end
return removed
`;

/**
 * HEARTBEAT — a worker says it is alive: its record (expiring with the TTL) and its entry in the
 * members index; members whose heartbeat expired leave the index.
 * KEYS: members, member. ARGV: worker, ttlMs, record (JSON). Returns the Redis time (ms).
 */
export const HEARTBEAT_LUA = `${NOW}
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 3)
return now
`;

/**
 * CLOCK — Redis's time (ms) on the server that holds the fleet's keys. KEYS: members (only to
 * route the call: on a Cluster, a plain `TIME` would go to any node, whose clock may differ from
 * the one that scored the heartbeats).
 */
export const CLOCK_LUA = `${NOW}
return now
`;
