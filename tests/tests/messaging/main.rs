//! The messaging backbone under failure: outbox atomicity, relay crashes, competing
//! relays, retries with backoff, poison messages and redrive. Real PostgreSQL and
//! RabbitMQ; each test has its own schema and queue prefix.

mod consumer;
mod dead_letters;
mod outages;
mod outbox;
mod permissions;
mod rig;
