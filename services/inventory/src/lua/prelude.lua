-- Helpers every script of the inventory mirror starts with (see src/store.rs).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function mirrored()
  return redis.call('HEXISTS', KEYS[1], 'on_hand') == 1
end

-- Lets the reservation keys expire with their last entry.
local function touch()
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if last[2] then
    local at = math.floor(tonumber(last[2])) + 1000
    redis.call('PEXPIREAT', KEYS[2], at)
    redis.call('PEXPIREAT', KEYS[3], at)
    redis.call('PEXPIREAT', KEYS[4], at)
  else
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  end
end

-- The generation of the cart's entry (live or tombstone), 0 if none.
local function gen_of(cart)
  return tonumber(redis.call('HGET', KEYS[4], cart) or '0')
end

-- Drops expired entries with their generations. With the mirror (m), keeps `reserved`
-- right and returns it.
local function prune(now, m)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, cart in ipairs(expired) do
    local q = redis.call('HGET', KEYS[3], cart)
    if q then
      redis.call('HDEL', KEYS[3], cart)
      if m then redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(q)) end
    end
    redis.call('HDEL', KEYS[4], cart)
    redis.call('ZREM', KEYS[2], cart)
  end
  if #expired > 0 then touch() end
  if not m then return 0 end
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('HSET', KEYS[1], 'reserved', 0)
    return 0
  end
  return tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
end

-- Sets the cart's entry to q units until exp, or (q 0, or exp past) to a tombstone,
-- with generation g. With the mirror (m), keeps `reserved`. Returns the units now held.
-- The caller checks the generation first and calls touch() after.
local function put(cart, q, exp, g, now, m)
  local cur = tonumber(redis.call('HGET', KEYS[3], cart) or '0')
  if q > 0 and exp > now then
    redis.call('HSET', KEYS[3], cart, q)
    redis.call('ZADD', KEYS[2], exp, cart)
  else
    q = 0
    redis.call('HDEL', KEYS[3], cart)
    redis.call('ZADD', KEYS[2], now + TOMBSTONE_MS, cart)
  end
  redis.call('HSET', KEYS[4], cart, g)
  if m and q ~= cur then redis.call('HINCRBY', KEYS[1], 'reserved', q - cur) end
  return q
end

-- Recomputes `reserved` from the entries; returns 1 if the stored total was wrong.
local function recount(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, cart in ipairs(expired) do
    redis.call('HDEL', KEYS[3], cart)
    redis.call('HDEL', KEYS[4], cart)
    redis.call('ZREM', KEYS[2], cart)
  end
  local total = 0
  for _, q in ipairs(redis.call('HVALS', KEYS[3])) do total = total + tonumber(q) end
  local before = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
  redis.call('HSET', KEYS[1], 'reserved', total)
  touch()
  if before ~= total then return 1 end
  return 0
end
