-- Reservations carry a generation, so that every copy of a reservation (Redis, this
-- table, the cart's events) is ordered by a number rather than by clocks. Each change
-- of any reservation takes the next value; a write applies only over an older one.
create sequence reservation_generation;

alter table reservations
    add column generation bigint not null default nextval('reservation_generation');

-- An ended reservation stays as a tombstone (quantity 0 with the generation that ended
-- it), so that an older copy arriving late (a mirror rebuild, a slow write) cannot bring
-- it back. Reconciliation purges tombstones after a day.
alter table reservations drop constraint reservations_quantity_check;
alter table reservations add constraint reservations_quantity_check check (quantity >= 0);

create index reservations_tombstones on reservations (updated_at) where quantity = 0;
