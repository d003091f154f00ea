-- Undo script of the inventory mirror; see src/store.rs for its contract.
local now = now_ms()
local m = mirrored()
prune(now, m)
local g = tonumber(ARGV[4])
if gen_of(ARGV[1]) ~= g then return 0 end
put(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), g, now, m)
touch()
return 1
