//! The vendor service (vendors, members, products, the public catalog, the product
//! cache across replicas) with a real customer service for users and tokens, against
//! real PostgreSQL, RabbitMQ and Redis, one isolated environment per test.

mod catalog;
mod harness;
mod products;
mod replicas;
mod vendors;
