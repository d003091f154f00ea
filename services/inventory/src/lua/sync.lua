-- Sync script of the inventory mirror; see src/store.rs for its contract.
local now = now_ms()
local mode = ARGV[5]
local m = mirrored()

local function apply_rows(mm)
  local restored = 0
  for i = 6, #ARGV, 4 do
    local cart = ARGV[i]
    local q = tonumber(ARGV[i + 1])
    local exp = tonumber(ARGV[i + 2])
    local g = tonumber(ARGV[i + 3])
    local stored = gen_of(cart)
    if g > stored then
      if put(cart, q, exp, g, now, mm) > 0 then restored = restored + 1 end
    elseif g == stored and mode == '2' and q > 0 and exp > now
        and redis.call('HEXISTS', KEYS[3], cart) == 1 then
      local cur = tonumber(redis.call('ZSCORE', KEYS[2], cart) or '0')
      if exp > cur then redis.call('ZADD', KEYS[2], exp, cart) end
    end
  end
  touch()
  return restored
end

if not m then
  if mode == '0' then return {5, 0, 0} end
  prune(now, false)
  if mode == '2' then
    apply_rows(false)
    return {5, 0, 0}
  end
  redis.call('HSET', KEYS[1], 'on_hand', ARGV[1], 'active', ARGV[2], 'version', ARGV[3],
    'reserved', 0)
  if mode ~= '3' then redis.call('HSET', KEYS[1], 'settle_until', now + SETTLE_MS) end
  local restored = apply_rows(false)
  recount(now)
  return {1, restored, 0}
end

local settle = tonumber(redis.call('HGET', KEYS[1], 'settle_until') or '0')
local settled = settle > 0 and settle <= now
if settled and mode == '0' then return {5, 0, 0} end
local state = 0
local cur = redis.call('HMGET', KEYS[1], 'on_hand', 'active', 'version')
local version = tonumber(cur[3] or '-1')
local incoming = tonumber(ARGV[3])
local differs = cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2]
if incoming > version then
  if differs then state = 2 end
  redis.call('HSET', KEYS[1], 'on_hand', ARGV[1], 'active', ARGV[2], 'version', ARGV[3])
elseif incoming == version then
  if differs then
    state = 3
    redis.call('HSET', KEYS[1], 'on_hand', ARGV[1], 'active', ARGV[2])
  end
else
  state = 4
end
local restored = 0
if mode ~= '0' then restored = apply_rows(true) end
local recounted = 0
if settled and mode == '1' then
  redis.call('HDEL', KEYS[1], 'settle_until')
  recount(now)
elseif ARGV[4] == '1' then
  recounted = recount(now)
end
return {state, restored, recounted}
