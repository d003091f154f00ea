-- Reserve script of the inventory mirror; see src/store.rs for its contract.
local now = now_ms()
local stock = redis.call('HMGET', KEYS[1], 'on_hand', 'active', 'settle_until')
if not stock[1] then return {0} end
if stock[3] then
  local wait = tonumber(stock[3]) - now
  if wait > 0 then return {5, wait} end
  return {0}
end
local reserved = prune(now, true)
local cart = ARGV[1]
local want = tonumber(ARGV[2])
local g = tonumber(ARGV[4])
local prev = tonumber(redis.call('HGET', KEYS[3], cart) or '0')
local prev_exp = 0
if prev > 0 then prev_exp = tonumber(redis.call('ZSCORE', KEYS[2], cart) or '0') end
local free = tonumber(stock[1]) - reserved
local most = free + prev
if most < 0 then most = 0 end
if gen_of(cart) >= g then return {4, prev, prev_exp, most} end
-- A conditional change (an undo): only over the entry of that generation.
if ARGV[5] ~= '' and gen_of(cart) ~= tonumber(ARGV[5]) then return {4, prev, prev_exp, most} end
if stock[2] ~= '1' and want > prev then return {3, prev, prev_exp, 0} end
if want > prev and want - prev > free then return {2, prev, prev_exp, most} end
local exp = now + tonumber(ARGV[3])
put(cart, want, exp, g, now, true)
touch()
return {1, prev, prev_exp, free - (want - prev), exp}
