-- Transactional outbox: events are written here in the same transaction as the state
-- change that caused them; the relay publishes them to RabbitMQ and marks them sent.
create table outbox (
    seq          bigserial primary key,
    id           uuid not null unique,
    event_type   text not null,
    envelope     jsonb not null,
    created_at   timestamptz not null default now(),
    published_at timestamptz
);

create index outbox_unpublished on outbox (seq) where published_at is null;
create index outbox_published_at on outbox (published_at) where published_at is not null;

-- Wake the relay as soon as a transaction that wrote events commits (NOTIFY is
-- delivered at commit, never for a rolled-back transaction). One channel per schema.
create function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('outbox_' || tg_table_schema, '');
    return null;
end;
$$;

create trigger outbox_notify after insert on outbox
    for each statement execute function outbox_notify();

-- Inbox: one row per (event, handler) written in the same transaction as the handler's
-- effect, so a redelivered event has exactly one effect.
create table inbox (
    event_id     uuid not null,
    handler      text not null,
    processed_at timestamptz not null default now(),
    primary key (event_id, handler)
);

create index inbox_processed_at on inbox (processed_at);
