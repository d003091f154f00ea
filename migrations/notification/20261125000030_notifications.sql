-- The contact read model: names, email addresses and phone numbers of customers and
-- vendors, copied from their events so sending never asks another service.
create table contacts (
    -- `customer` or `vendor`.
    kind       text not null,
    id         uuid not null,
    name       text not null,
    email      text not null,
    phone      text,
    -- The vendor's revision (vendor.created is 1); customers' events carry none.
    revision   bigint,
    updated_at timestamptz not null default now(),
    constraint contacts_pkey primary key (kind, id),
    constraint contacts_kind check (kind in ('customer', 'vendor'))
);

-- Every email and SMS, rendered when its event arrived, and its delivery state.
create table notifications (
    id              uuid primary key,
    -- The event that caused it.
    event_id        uuid not null,
    event_type      text not null,
    channel         text not null,
    -- Who it is for: a customer or a vendor, by id (the address may be unknown).
    audience        text not null,
    recipient_id    uuid not null,
    -- Email address or phone number; null when no contact was known.
    recipient       text,
    template        text not null,
    subject         text not null,
    body_text       text not null,
    body_html       text,
    order_id        uuid,
    product_id      uuid,
    status          text not null default 'pending',
    attempts        integer not null default 0,
    last_error      text,
    next_attempt_at timestamptz not null default now(),
    -- Lease of the sender that claimed the row; another sender may take it after.
    claimed_until   timestamptz,
    created_at      timestamptz not null default now(),
    sent_at         timestamptz,
    constraint notifications_once unique (event_id, channel, recipient_id),
    constraint notifications_channel check (channel in ('email', 'sms')),
    constraint notifications_audience check (audience in ('customer', 'vendor')),
    constraint notifications_status check (status in ('pending', 'sent', 'failed'))
);

-- What the sender claims: due pending rows, oldest due first.
create index notifications_due on notifications (next_attempt_at) where status = 'pending';
-- Listing: a recipient's own, newest first.
create index notifications_recipient on notifications (recipient_id, id desc);
create index notifications_order on notifications (order_id, id desc) where order_id is not null;
