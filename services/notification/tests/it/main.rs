//! The notification service against real PostgreSQL, RabbitMQ and Redis, a real SMTP
//! server and a local Twilio-shaped SMS provider, one isolated environment per test.
//! Events the customer, vendor, order and inventory services would send are published
//! on the test's exchange.

mod delivery;
mod email;
mod harness;
mod listing;
mod low_stock;
mod sms;
