//! The DynamoDB adapters, one file per table: [`media`] (pk `hash`), [`decks`] (the deck-files
//! table, pk `deck`, sk `filename`), [`refs`] (reference items, whose transactions also move the
//! other two), [`quotas`] (daily allowances) and [`access`] (the deny-list and rate buckets, in the
//! quotas table). [`deck_item`] is how a deck-files item is laid out; `helpers` is what they share.

pub mod access;
pub mod deck_item;
pub mod decks;
mod helpers;
pub mod media;
pub mod quotas;
pub mod refs;

pub use access::DynamoAccess;
pub use decks::DynamoDecks;
pub use media::DynamoMedia;
pub use quotas::{DynamoQuotas, PENDING_INDEX};
pub use refs::DynamoRefs;
