-- Carts: one open cart per customer at a time. `last_activity_at` moves with every change
-- of the cart; the idle worker abandons open carts past the idle time.
create table carts (
    id               uuid primary key,
    customer_id      uuid not null,
    status           text not null default 'open'
                     check (status in ('open', 'checked_out', 'abandoned')),
    currency         text not null,
    order_id         uuid unique,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    last_activity_at timestamptz not null default now(),
    checked_out_at   timestamptz,
    abandoned_at     timestamptz
);

create unique index carts_one_open_per_customer on carts (customer_id) where status = 'open';
create index carts_idle on carts (last_activity_at) where status = 'open';

-- Lines of a cart, priced from the catalog. `added_price` is the unit price when the
-- line was first added; `price_revision` the product revision the price comes from
-- (price refreshes apply only newer revisions); `generation` the generation of the
-- line's current reservation at inventory.
create table cart_items (
    cart_id        uuid not null references carts (id) on delete cascade,
    product_id     uuid not null,
    vendor_id      uuid not null,
    name           text not null,
    quantity       bigint not null check (quantity between 1 and 999),
    unit_price     bigint not null check (unit_price >= 0),
    added_price    bigint not null check (added_price >= 0),
    price_revision bigint not null,
    generation     bigint not null default 0,
    added_at       timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    primary key (cart_id, product_id)
);

create index cart_items_product on cart_items (product_id);

-- Checkout requests by Idempotency-Key (IETF draft), scoped to the customer. The
-- fingerprint is a SHA-256 of the cart id and the request body. `order_id` is chosen
-- when the key is first seen, so a retry after a failure reuses it. While `status` is
-- `in_flight` the request holds the key until `locked_until` (a lease: a request that
-- died stops blocking its key once the lease ends). `done` rows keep the response that
-- every replay returns.
create table checkout_requests (
    customer_id     uuid not null,
    idempotency_key text not null,
    cart_id         uuid not null,
    fingerprint     text not null,
    order_id        uuid not null,
    status          text not null check (status in ('in_flight', 'done')),
    locked_until    timestamptz,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    primary key (customer_id, idempotency_key)
);

create index checkout_requests_created on checkout_requests (created_at);
