//! Queries on the inventory schema, one module per aggregate: stock items, the ledger
//! of movements, orders' stock records, reservations' durable copies, and the rows the
//! Redis mirror is built from. Every function takes the connection (or transaction)
//! it runs on, so callers decide what commits together. The modules' items are
//! re-exported here, so callers name them `db::item`, `db::move_stock`...

mod items;
mod mirror;
mod movements;
mod orders;
mod reservations;

pub use items::*;
pub use mirror::*;
pub use movements::*;
pub use orders::*;
pub use reservations::*;
