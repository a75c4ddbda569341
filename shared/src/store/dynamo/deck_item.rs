//! How the deck index stores a filename's versions in its DynamoDB item: besides `deck`,
//! `filename`, `notes` (all versions) and `updated_at`, a count `c_<hash>` and a time `a_<hash>`
//! per hash. Items written before versions were kept have only `hash` and `notes`.

use crate::hash::Sha256Hash;
use crate::store::refs::{FileVersions, Version};
use crate::store::DeckFile;

pub const COUNT: &str = "c_";
pub const ADDED: &str = "a_";

pub fn count_attr(hash: &Sha256Hash) -> String {
    format!("{COUNT}{hash}")
}
pub fn added_attr(hash: &Sha256Hash) -> String {
    format!("{ADDED}{hash}")
}

/// The versions an item holds; `None` if it is not a deck index item.
pub fn versions(item: &serde_dynamo::Item) -> Option<(String, String, FileVersions, Option<String>)> {
    use serde_dynamo::AttributeValue as A;
    let string = |k: &str| match item.get(k) {
        Some(A::S(v)) => Some(v.clone()),
        _ => None,
    };
    let number = |v: Option<&A>| match v {
        Some(A::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    let (deck, filename) = (string("deck")?, string("filename")?);
    let mut versions = FileVersions::default();
    for (name, value) in item.iter() {
        if let Some(hash) = name.strip_prefix(COUNT).and_then(|h| Sha256Hash::parse(h).ok()) {
            let notes = number(Some(value)).unwrap_or(0);
            let added_at = string(&added_attr(&hash)).unwrap_or_default();
            versions.0.insert(hash, Version { notes, added_at });
        }
    }
    // Notes counted before versions were kept belong to the hash the item named then.
    let untracked = number(item.get("notes")).unwrap_or(0) - versions.notes();
    if let Some(legacy) = string("hash").and_then(|h| Sha256Hash::parse(&h).ok()) {
        if untracked > 0 {
            versions.0.entry(legacy).or_default().notes += untracked;
        }
    }
    versions.0.retain(|_, v| v.notes > 0);
    Some((deck, filename, versions, string("updated_at")))
}

/// The item as the API sees it: `None` when no note uses the name any more.
pub fn deck_file(item: &serde_dynamo::Item) -> Option<DeckFile> {
    let (deck, filename, versions, updated_at) = versions(item)?;
    Some(DeckFile { deck, filename, hash: versions.resolved()?, notes: versions.notes(), updated_at })
}
