-- Inventory: stock items, the movement ledger, order commits and the durable copy of
-- reservations. PostgreSQL is the source of truth for stock; Redis holds reservations
-- and a mirror of on_hand that is rebuilt from here.

-- One stock item per product. Normally created by vendor.product.created; if a
-- vendor.product.updated overtakes its create, the update creates the item with no
-- stock and the create adds the initial stock later (initial_stock_recorded).
create table stock_items (
    product_id             uuid primary key,
    vendor_id              uuid not null,
    sku                    text not null,
    name                   text not null,
    active                 boolean not null,
    low_stock_threshold    bigint not null check (low_stock_threshold >= 0),
    -- Always the sum of this item's ledger movements; never negative, so no commit
    -- can sell stock that is not there, whatever Redis believes.
    on_hand                bigint not null default 0 check (on_hand >= 0),
    -- The product revision the metadata above comes from; older events are ignored.
    revision               bigint not null,
    initial_stock_recorded boolean not null default false,
    -- inventory.low_stock fires when on_hand falls to the threshold while armed, which
    -- disarms it; rising above the threshold re-arms it.
    low_stock_armed        boolean not null default true,
    -- Grows with every change the Redis mirror holds (on_hand, active), so a mirror
    -- write never replaces a newer one.
    version                bigint not null default 0,
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now()
);

create index stock_items_vendor on stock_items (vendor_id);

-- The ledger: every change of on_hand, written in the transaction that changes it.
create table stock_movements (
    seq           bigserial primary key,
    id            uuid not null unique,
    product_id    uuid not null references stock_items (product_id),
    kind          text not null
                  check (kind in ('initial_stock', 'adjustment', 'order', 'order_release')),
    delta         bigint not null check (delta <> 0),
    reason        text not null,
    -- The order id for order movements, the creating event for the initial stock.
    reference     text,
    -- Who made an adjustment.
    actor_id      uuid,
    on_hand_after bigint not null check (on_hand_after >= 0),
    created_at    timestamptz not null default now()
);

create index stock_movements_product on stock_movements (product_id, seq desc);

-- What happened to each order's stock, so commits and releases happen at most once:
-- committed -> released; rejected (nothing changed); void (the order failed before
-- its stock was committed: a late order.created must not commit it).
create table order_commits (
    order_id   uuid primary key,
    cart_id    uuid not null,
    status     text not null check (status in ('committed', 'rejected', 'released', 'void')),
    -- [{product_id, quantity}] as committed, what a release gives back.
    items      jsonb not null default '[]',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- Durable copy of the reservations held in Redis, written after each change there, so
-- reconciliation can restore unexpired reservations after Redis lost its data.
create table reservations (
    product_id uuid not null,
    cart_id    uuid not null,
    quantity   bigint not null check (quantity > 0),
    expires_at timestamptz not null,
    updated_at timestamptz not null default now(),
    primary key (product_id, cart_id)
);

create index reservations_cart on reservations (cart_id);
create index reservations_expires_at on reservations (expires_at);
