-- A charge is a payment intent at the provider, created once per order and confirmed
-- with the customer's payment method; its id is kept here before it is confirmed, so
-- that its state can always be asked for (an answer lost, a driver killed) and it can be
-- cancelled or refunded whatever happened.
alter table orders add column payment_intent text;
-- Whether a driver ever worked on the order's charge: only then can anything exist at
-- the provider that a failed or cancelled order must settle.
alter table orders add column charge_started boolean not null default false;
update orders set charge_started = true where saga_step is distinct from 'charge' or step_attempts > 0;

-- A confirmation is recorded as 'requested' before it is sent; its answer turns it into
-- 'succeeded' or 'declined', or, once the provider says nothing was captured, 'failed'.
-- A 'requested' attempt whose answer never came is resolved by asking the provider.
alter table payments drop constraint payments_status_check;
alter table payments add constraint payments_status_check
    check (status in ('requested', 'succeeded', 'declined', 'failed'));
