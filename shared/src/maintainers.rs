//! The maintainer API: list/search a deck's media, remove a file from a deck.

use std::collections::BTreeMap;
use unicode_normalization::UnicodeNormalization;

use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::{Principal, Scope};
use crate::clock::now_rfc3339;
use crate::download_urls::UrlSigner;
use crate::error::ApiError;
use crate::hash::Sha256Hash;
use crate::model::{Keys, MediaStatus};
use crate::policy::{check_deck, normalize_filename};
use crate::references::set_note;
use crate::store::refs::ReferenceStore;
use crate::store::{lookup, DeckIndex, MediaRepo};

/// What the maintainer API reads, changes and signs with ([`crate::App::maintainers`]).
pub struct Ports<'a> {
    pub media: &'a dyn MediaRepo,
    pub decks: &'a dyn DeckIndex,
    pub refs: &'a dyn ReferenceStore,
    pub urls: UrlSigner<'a>,
    pub keys: &'a Keys,
}

/// Files per page of the maintainer listing.
pub const PAGE_SIZE: usize = 200;
/// Index entries one search request reads at most: a query that matches little must not read a
/// whole 10,000-file deck in one request. It answers what it found with a cursor to go on from.
pub const MAX_SCANNED: usize = 2_000;
/// Rounds of removal before DELETE gives up (and answers 503, to be retried).
const REMOVE_ROUNDS: u32 = 8;

#[derive(Debug, Serialize)]
pub struct MaintainerFile {
    pub filename: String,
    pub hash: String,
    pub status: MediaStatus,
    pub size: Option<u64>,
    pub stored_size: Option<u64>,
    pub content_type: Option<String>,
    /// Pixel size of a stored image.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Playing time of stored audio.
    pub duration_ms: Option<u64>,
    /// SHA-256 of the stored bytes (equal to `hash` when stored as uploaded); null until stored.
    pub stored_hash: Option<String>,
    pub notes: i64,
    pub url: Option<String>,
    pub thumbnail_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MaintainerPage {
    pub files: Vec<MaintainerFile>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Removed {
    pub removed: usize,
}

fn authorize(who: &Principal, deck: &str) -> Result<(), ApiError> {
    who.require_any(&[Scope::Maintain])?;
    check_deck(deck)?;
    if !who.decks.iter().any(|d| d == deck) {
        return Err(ApiError::forbidden("the token does not maintain this deck"));
    }
    Ok(())
}

pub async fn list_deck_media(
    ports: &Ports<'_>,
    who: &Principal,
    deck: &str,
    query: Option<&str>,
    cursor: Option<&str>,
    now: OffsetDateTime,
) -> Result<MaintainerPage, ApiError> {
    authorize(who, deck)?;
    // Names are stored NFC; a query typed on a Mac may arrive NFD.
    let needle = query.map(|q| q.nfc().collect::<String>().to_lowercase()).filter(|q| !q.is_empty());
    let mut after = cursor.map(crate::downloads::decode_cursor).transpose()?;
    // Search filters whole index pages; keep reading until a page of matches, the end, or the
    // most one request may read (then the page may hold fewer matches, or none, and a cursor).
    let mut matches = Vec::new();
    let mut scanned = 0;
    let next = loop {
        let page = ports.decks.page(deck, after.as_deref(), PAGE_SIZE).await?;
        scanned += page.entries.len();
        for e in page.entries {
            if needle.as_ref().is_none_or(|n| e.filename.to_lowercase().contains(n.as_str())) {
                matches.push(e);
            }
        }
        match page.next_after {
            Some(a) if matches.len() < PAGE_SIZE && scanned < MAX_SCANNED => after = Some(a),
            other => break other,
        }
    };
    let hashes: Vec<Sha256Hash> = matches.iter().map(|e| e.hash).collect();
    let records = lookup(ports.media, &hashes).await?;
    // Previews are under media/ and thumbs/: a grant for each, nothing else.
    let keys = ports.keys;
    let signer = ports.urls.for_answer(&[keys.media_prefix.as_str(), keys.thumb_prefix.as_str()], now).await?;
    let files = matches
        .into_iter()
        .map(|e| {
            let r = records.get(&e.hash);
            let ready = r.filter(|r| r.status == MediaStatus::Ready);
            let sign = |key: &Option<String>| key.as_deref().and_then(|k| signer.url(k));
            MaintainerFile {
                filename: e.filename,
                hash: e.hash.to_hex(),
                status: r.map_or(MediaStatus::Missing, |r| r.status),
                size: r.and_then(|r| r.size),
                stored_size: r.and_then(|r| r.stored_size),
                content_type: r.and_then(|r| r.content_type.clone()),
                width: r.and_then(|r| r.width),
                height: r.and_then(|r| r.height),
                duration_ms: r.and_then(|r| r.duration_ms),
                stored_hash: ready.and_then(|r| r.stored_hash).map(|h| h.to_hex()),
                notes: e.notes,
                url: ready.and_then(|r| sign(&r.stored_key)),
                thumbnail_url: ready.and_then(|r| sign(&r.thumb_key)),
            }
        })
        .collect();
    let next_cursor = next.as_deref().map(crate::downloads::encode_cursor);
    Ok(MaintainerPage { files, next_cursor })
}

/// Remove every reference to `filename` in the deck; counts follow through the same transactions
/// as any other reference change.
pub async fn remove_deck_file(
    ports: &Ports<'_>,
    who: &Principal,
    deck: &str,
    filename: &str,
    now: OffsetDateTime,
) -> Result<Removed, ApiError> {
    authorize(who, deck)?;
    let filename = normalize_filename(filename).map_err(|e| ApiError::bad_request(format!("filename: {e}")))?;
    let now_s = now_rfc3339(now);
    let mut removed = 0;
    let without = |current: &BTreeMap<String, Sha256Hash>| {
        let mut d = current.clone();
        d.remove(&filename);
        d
    };
    // `file_refs` reads an index that DynamoDB updates eventually: right after a reference change
    // it may miss a note. The deck index item is written in the same transactions as the
    // references and read consistently, so repeat until it says no note uses the file.
    for round in 0..REMOVE_ROUNDS {
        for r in ports.refs.file_refs(deck, &filename).await? {
            removed += set_note(ports.refs, ports.media, deck, &r.note_id, &without, &now_s).await?.1;
        }
        if ports.decks.file_notes(deck, &filename).await? <= 0 {
            return Ok(Removed { removed });
        }
        tracing::info!(deck, filename, round, "the by_file index lags the references; removing again");
        tokio::time::sleep(std::time::Duration::from_millis(100 << round.min(4))).await;
    }
    Err(ApiError::unavailable())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::references::NoteSet;
    use crate::App;

    /// Issue 20 (suspicion): a search that matches nothing must not read a whole big deck in
    /// one request. Each request reads at most `MAX_SCANNED` entries and answers a cursor; the
    /// cursors together still find every match.
    #[tokio::test]
    async fn a_search_reads_a_bounded_slice_of_the_index_per_request() {
        let app = App::in_memory("k");
        let hash = crate::hash::Sha256Hash::from_digest([7; 32]);
        for i in 0..5_000 {
            let set: NoteSet = [(format!("f{i:05}.png"), hash)].into_iter().collect();
            set_note(&*app.refs, &*app.media, "big", &format!("n{i}"), &|_: &NoteSet| set.clone(), "t").await.unwrap();
        }
        let token = crate::auth::mint(b"k", "m", "maintain", &["big".to_string()], 60);
        let who = app.tokens.as_ref().unwrap().verify(Some(&format!("Bearer {token}"))).unwrap();
        let now = OffsetDateTime::now_utc();
        for (q, want) in [("nothing-matches", 0), ("f04999", 1), ("f01", 1_000)] {
            let (mut requests, mut found, mut cursor) = (0, 0, None);
            loop {
                let page =
                    list_deck_media(&app.maintainers(), &who, "big", Some(q), cursor.as_deref(), now).await.unwrap();
                requests += 1;
                found += page.files.len();
                assert!(page.files.len() <= PAGE_SIZE);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(found, want, "{q}");
            assert!(requests >= 5_000 / MAX_SCANNED, "{q}: {requests} requests");
            assert!(requests <= 5_000 / PAGE_SIZE + 1, "{q}: {requests} requests");
        }
    }
}
