-- The relay is woken inside its own process once a transaction that may have written
-- events has committed (mp_events::outbox::committed), and polls as a safety net.
-- NOTIFY is gone: a transaction that notifies holds a lock shared by the whole
-- database until its commit is flushed, so every service's outbox writers queued on
-- one another (the checkout saga's main wait under load).
drop trigger if exists outbox_notify on outbox;
drop function if exists outbox_notify();
