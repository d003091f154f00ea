-- Level script of the inventory mirror; see src/store.rs for its contract.
if not mirrored() then return {0} end
local reserved = prune(now_ms(), true)
local mine = 0
if ARGV[1] ~= '' then mine = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') end
return {1, reserved, mine}
