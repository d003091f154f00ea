-- Who holds a claim: the PostgreSQL backend of the relay's connection. A claim whose
-- backend is gone (its process died) is free at once, without waiting for the lease.
alter table outbox add column claimed_by integer;
