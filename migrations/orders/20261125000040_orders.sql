-- Orders: the order, its lines, its status history, shipments, payment attempts and
-- the payment tokens handed over by the cart (kept here only until the charge ends).

create table orders (
    id               uuid primary key,
    -- One order per cart: a redelivered or repeated cart.checkout finds it.
    cart_id          uuid not null unique,
    customer_id      uuid not null,
    status           text not null check (status in ('pending', 'paid', 'confirmed',
                     'shipped', 'delivered', 'cancelled', 'payment_failed', 'rejected')),
    -- Grows with every transition; a transition applies only to the version it read
    -- (compare-and-set), so two concurrent transitions never both win.
    version          bigint not null default 0,
    currency         text not null,
    subtotal         bigint not null,
    tax              bigint not null,
    total            bigint not null check (total >= 0),
    shipping_address jsonb not null,
    stock_committed  boolean not null default false,
    failure_reason   text,
    -- The saga: the step the order waits on ('charge', 'stock', 'refund') or null,
    -- since when, when the driver may next work on it, and the driver's lease.
    saga_step        text check (saga_step in ('charge', 'stock', 'refund')),
    step_since       timestamptz,
    next_attempt_at  timestamptz,
    claimed_until    timestamptz,
    step_attempts    integer not null default 0,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);

create index orders_customer on orders (customer_id, id desc);
create index orders_status on orders (status, id desc);
create index orders_saga_due on orders (next_attempt_at) where saga_step in ('charge', 'refund');
create index orders_saga_waiting on orders (step_since) where saga_step is not null;

create table order_items (
    order_id    uuid not null references orders (id),
    line_no     integer not null,
    product_id  uuid not null,
    vendor_id   uuid not null,
    name        text not null,
    quantity    bigint not null check (quantity > 0),
    unit_price  bigint not null check (unit_price >= 0),
    primary key (order_id, line_no)
);

create index order_items_vendor on order_items (vendor_id, order_id);

-- Every status change: from (null for the creation), to, why, when and by whom
-- ('system', or 'customer:<id>', 'vendor:<id>', 'admin:<id>').
create table order_status_history (
    seq         bigserial primary key,
    order_id    uuid not null references orders (id),
    from_status text,
    to_status   text not null,
    reason      text,
    at          timestamptz not null default now(),
    by          text not null
);

create index order_status_history_order on order_status_history (order_id, seq);

-- One shipment per vendor of an order.
create table shipments (
    id              uuid primary key,
    order_id        uuid not null references orders (id),
    vendor_id       uuid not null,
    carrier         text not null,
    tracking_number text not null,
    shipped_by      uuid not null,
    created_at      timestamptz not null default now(),
    unique (order_id, vendor_id)
);

-- Every payment attempt, charge or refund, with its outcome.
create table payments (
    id              uuid primary key,
    order_id        uuid not null references orders (id),
    kind            text not null check (kind in ('charge', 'refund')),
    status          text not null check (status in ('succeeded', 'declined', 'failed')),
    gateway         text not null,
    idempotency_key text not null,
    provider_id     text,
    amount          bigint not null,
    currency        text not null,
    error           text,
    created_at      timestamptz not null default now()
);

create index payments_order on payments (order_id, created_at);
-- However often a step is retried or redelivered: at most one successful charge and
-- one successful refund per order.
create unique index payments_one_charge on payments (order_id)
    where kind = 'charge' and status = 'succeeded';
create unique index payments_one_refund on payments (order_id)
    where kind = 'refund' and status = 'succeeded';

-- The cart's payment token for an order, handed over by an internal call so that it
-- never travels in an event. Deleted once the charge has a final outcome; unused rows
-- are purged after a day.
create table payment_methods (
    order_id      uuid primary key,
    customer_id   uuid not null,
    cart_id       uuid not null,
    payment_token text not null,
    created_at    timestamptz not null default now()
);

create index payment_methods_created on payment_methods (created_at);
