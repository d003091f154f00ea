-- +1 per profile change, carried in customer.created (1) and customer.updated, so read
-- models (notification's contacts) keep the newest profile whatever order events arrive in.
alter table customers add column revision bigint not null default 1;
