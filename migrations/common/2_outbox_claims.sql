-- The relay claims rows with a lease instead of holding row locks while it publishes:
-- no transaction stays open across the broker round trip, and rows claimed by a relay
-- that died become claimable again when the lease runs out.
alter table outbox add column claimed_until timestamptz;
