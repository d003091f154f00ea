create table customers (
    id               uuid primary key,
    email            text not null,
    -- Trimmed and lower-cased: what uniqueness and login compare.
    email_normalized text not null,
    password_hash    text not null,
    name             text not null,
    phone            text,
    is_admin         boolean not null default false,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint customers_email_unique unique (email_normalized)
);

-- Granted when the vendor service reports `vendor.created`; carried in access tokens.
create table vendor_memberships (
    customer_id uuid not null,
    vendor_id   uuid not null,
    role        text not null,
    created_at  timestamptz not null default now(),
    primary key (customer_id, vendor_id)
);
