-- Grows by one with every change of a vendor's name or contact details, starting at 1
-- with its creation; `vendor.updated` carries it so consumers keep the newest.
alter table vendors add column revision bigint not null default 1;
