-- Products as vendors list them. Ids are UUID v7, so ordering by id is creation order:
-- the catalog pages through it with a keyset on id.
create table products (
    id                  uuid primary key,
    vendor_id           uuid not null references vendors (id),
    sku                 text not null,
    name                text not null,
    description         text not null default '',
    -- Money in minor units of an ISO 4217 currency, as everywhere in the API.
    price_amount        bigint not null,
    price_currency      text not null,
    active              boolean not null default true,
    -- What the stock item started with in inventory (inventory owns stock from then on).
    initial_stock       bigint not null,
    low_stock_threshold bigint not null,
    -- Public: 1 at creation, +1 per change; events carry it so consumers can ignore an
    -- older state that arrives late.
    revision            bigint not null default 1,
    -- Internal: +1 per change of anything a product read shows (the product or its stock).
    -- The Redis cache replaces a cached read only with a higher version, so a slow writer
    -- or reader can never put an older state back.
    cache_version       bigint not null default 1,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    -- The API validates all of these first; the checks keep the data sound whatever writes it.
    constraint products_price_positive check (price_amount > 0),
    constraint products_currency_format check (price_currency ~ '^[A-Z]{3}$'),
    constraint products_initial_stock_non_negative check (initial_stock >= 0),
    constraint products_threshold_non_negative check (low_stock_threshold >= 0)
);

-- A SKU names one article of one vendor; letter case does not make a new article.
create unique index products_vendor_sku_unique on products (vendor_id, lower(sku));
-- The public catalog lists active products in id order, all of them or one vendor's.
create index products_active on products (id) where active;
create index products_vendor on products (vendor_id, id);

-- Stock figures the inventory service reports (inventory.created, inventory.updated),
-- shown with product reads. `as_of` and `event_id` are those of the event that set the
-- figures: an event older than them changes nothing, in whatever order RabbitMQ delivers.
-- No foreign key to products: a report about a product this schema does not hold is
-- recorded rather than dead-lettered, so nothing is lost if the two ever disagree.
create table product_stock (
    product_id uuid primary key,
    vendor_id  uuid not null,
    on_hand    bigint not null,
    reserved   bigint not null,
    available  bigint not null,
    as_of      timestamptz not null,
    event_id   uuid not null,
    updated_at timestamptz not null default now()
);
