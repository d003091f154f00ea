-- Release script of the inventory mirror; see src/store.rs for its contract.
local now = now_ms()
local m = mirrored()
prune(now, m)
local g = tonumber(ARGV[2])
if gen_of(ARGV[1]) >= g then return -1 end
local q = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
put(ARGV[1], 0, 0, g, now, m)
touch()
return q
