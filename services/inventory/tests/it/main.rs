//! The inventory service against real PostgreSQL, RabbitMQ and Redis, one isolated
//! environment per test (own schema, queue prefix and Redis key prefix). Events the
//! vendor, cart and order services would send are published on the test's exchange.

mod adjustments;
mod guarantees;
mod harness;
mod orders;
mod races;
mod redis_loss;
mod reservations;
mod stock_items;
