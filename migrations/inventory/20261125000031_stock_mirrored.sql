-- Whether the Redis mirror of an item was ever built. Only the very first build may
-- skip settling (no reservation can be on its way before a mirror exists); every later
-- rebuild (after Redis lost its data) settles. Items that existed before this column
-- had mirrors.
alter table stock_items add column mirrored boolean not null default true;
alter table stock_items alter column mirrored set default false;
