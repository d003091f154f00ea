-- Vendors: the businesses that sell on the marketplace.
create table vendors (
    id         uuid primary key,
    name       text not null,
    email      text not null,
    phone      text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- Who may act for a vendor. This table is the authority: a member added here may act at
-- once, before their access token carries the vendor (the token's claim only saves a
-- lookup). The creator is the first owner; owners may add members.
create table vendor_members (
    vendor_id   uuid not null references vendors (id) on delete cascade,
    customer_id uuid not null,
    role        text not null,
    created_at  timestamptz not null default now(),
    constraint vendor_members_pkey primary key (vendor_id, customer_id),
    constraint vendor_members_role check (role in ('owner', 'member'))
);

-- The vendors of one customer.
create index vendor_members_customer on vendor_members (customer_id);
