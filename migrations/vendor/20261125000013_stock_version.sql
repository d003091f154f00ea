-- Stock figures are ordered by the stock item's version carried in inventory's events,
-- never by the clocks of two hosts: a report replaces the recorded one only if newer.
alter table product_stock add column version bigint not null default -1;
alter table product_stock alter column event_id drop not null;
