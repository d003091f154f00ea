//! The customer service end to end (registration, login and its throttle, tokens and
//! sessions, profiles, vendor memberships, faults), against real PostgreSQL, RabbitMQ
//! and Redis, one isolated environment per test.

mod faults;
mod harness;
mod login;
mod memberships;
mod profiles;
mod registration;
mod sessions;
