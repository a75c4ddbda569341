//! POST /v1/downloads and GET /v1/media/{hash}.

use std::collections::HashMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::{Principal, Scope};
use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::download_urls::UrlSigner;
use crate::error::ApiError;
use crate::hash::Sha256Hash;
use crate::model::MediaStatus;
use crate::policy::{check_deck, normalize_filename};
use crate::servable::{Found, ReadyCache};
use crate::store::{lookup, DeckIndex, MediaRepo};

/// What answering downloads reads and signs with ([`crate::App::downloads`]).
pub struct Ports<'a> {
    pub media: &'a dyn MediaRepo,
    pub decks: &'a dyn DeckIndex,
    /// This instance's memory of ready records.
    pub ready: &'a ReadyCache,
    pub urls: UrlSigner<'a>,
    pub config: &'a Config,
}

#[derive(Debug, Deserialize)]
pub struct DownloadRequest {
    pub deck: String,
    #[serde(default)]
    pub filenames: Option<Vec<String>>,
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DownloadFile {
    pub filename: String,
    pub hash: Sha256Hash,
    /// SHA-256 of the bytes served (the original's hash unless processing converted it), so that
    /// clients can verify what they downloaded.
    pub stored_hash: Sha256Hash,
    pub url: String,
    pub size: u64,
    pub content_type: String,
    pub expires_at: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Unavailable {
    pub filename: String,
    pub reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct DownloadResponse {
    pub files: Vec<DownloadFile>,
    pub unavailable: Vec<Unavailable>,
    pub next_cursor: Option<String>,
}

pub(crate) fn encode_cursor(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after)
}

/// A cursor is the last filename of the page before, base64url: decoded, it must be a name the
/// deck index can hold, or DynamoDB would be asked for a key it refuses (an empty or over-long
/// one) and the answer would be a 503 instead of this 400.
pub(crate) fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|name| normalize_filename(name).is_ok_and(|n| &n == name))
        .ok_or_else(|| ApiError::bad_request("cursor: not a cursor this API returned"))
}

pub async fn presign_downloads(
    ports: &Ports<'_>,
    who: &Principal,
    req: DownloadRequest,
    now: OffsetDateTime,
) -> Result<DownloadResponse, ApiError> {
    let started = std::time::Instant::now();
    who.require_any(&[Scope::Download])?;
    check_deck(&req.deck)?;
    let mut unavailable = Vec::new();
    let (entries, next_cursor) = match req.filenames {
        Some(names) => {
            let max = ports.config.limits.max_download_batch;
            if names.len() > max {
                return Err(ApiError::too_many_items(format!("filenames: at most {max} per request")));
            }
            // Looked up by their one spelling, answered by the spelling the client sent, so it
            // can match answers to what it asked for. A name Anki cannot have is not in the deck.
            let mut valid = Vec::with_capacity(names.len());
            for name in names {
                match normalize_filename(&name) {
                    Ok(n) => valid.push((name, n)),
                    Err(_) => unavailable.push(Unavailable { filename: name, reason: "unknown" }),
                }
            }
            let lookup: Vec<String> = valid.iter().map(|(_, n)| n.clone()).collect();
            let found = ports.decks.resolve(&req.deck, &lookup).await?;
            let mut entries = Vec::with_capacity(valid.len());
            for (asked, name) in valid {
                match found.get(&name) {
                    Some(h) => entries.push((asked, *h)),
                    None => unavailable.push(Unavailable { filename: asked, reason: "unknown" }),
                }
            }
            (entries, None)
        }
        None => {
            let after = req.cursor.as_deref().map(decode_cursor).transpose()?;
            let page = ports.decks.page(&req.deck, after.as_deref(), ports.config.download_page_size).await?;
            let entries = page.entries.into_iter().map(|e| (e.filename, e.hash)).collect();
            (entries, page.next_after.as_deref().map(encode_cursor))
        }
    };

    // Ready records this instance read since a deck read that started within the cache's time
    // are answered from memory (`servable` says why that is safe); the rest are read.
    let hashes: Vec<Sha256Hash> = entries.iter().map(|(_, h)| *h).collect();
    let after_deck_read = now + started.elapsed();
    let found = ports.ready.find(ports.media, &hashes, now, after_deck_read).await?;
    // Every URL of a download answer is under media/: with CloudFront, one policy covers them.
    let signer = ports.urls.for_answer(&[ports.config.keys.media_prefix.as_str()], now).await?;
    let ttl = ports.config.url_ttl_secs;
    let expires_at = now_rfc3339(now + time::Duration::seconds(i64::from(ttl)));
    // Signing is per stored key; a deck may use one file under several names.
    let mut urls: HashMap<&str, Option<String>> = HashMap::new();
    let mut files = Vec::with_capacity(entries.len());
    for (filename, hash) in &entries {
        let signed = match found.get(hash) {
            Some(Found::Ready(s)) => {
                match urls.entry(s.stored_key.as_str()).or_insert_with(|| signer.url(&s.stored_key)) {
                    Some(url) => Ok((s, url.clone())),
                    None => Err("missing"),
                }
            }
            Some(Found::Unavailable(reason)) => Err(*reason),
            None => Err("missing"),
        };
        match signed {
            Ok((s, url)) => files.push(DownloadFile {
                filename: filename.clone(),
                hash: *hash,
                stored_hash: s.stored_hash,
                url,
                size: s.size,
                content_type: s.content_type.clone(),
                expires_at: expires_at.clone(),
            }),
            Err(reason) => unavailable.push(Unavailable { filename: filename.clone(), reason }),
        }
    }
    Ok(DownloadResponse { files, unavailable, next_cursor })
}

#[derive(Debug, Serialize)]
pub struct MediaInfo {
    pub hash: String,
    pub status: MediaStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<u64>,
    /// SHA-256 of the stored bytes, once ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Playing time of audio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

pub async fn media_status(media: &dyn MediaRepo, who: &Principal, hash: &str) -> Result<MediaInfo, ApiError> {
    who.require_any(&[Scope::Upload, Scope::Download])?;
    let hash = Sha256Hash::parse(hash).map_err(|_| ApiError::bad_request("hash: 64 lowercase hex characters"))?;
    let records = lookup(media, &[hash]).await?;
    let r = records.get(&hash).ok_or_else(|| ApiError::not_found("no such media"))?;
    Ok(MediaInfo {
        hash: hash.to_hex(),
        status: r.status,
        reason: r.reason.map(|x| x.code()),
        content_type: r.content_type.clone(),
        size: r.size,
        stored_size: r.stored_size,
        stored_hash: (r.status == MediaStatus::Ready).then(|| r.stored_hash.unwrap_or(r.hash).to_hex()),
        width: r.width,
        height: r.height,
        duration_ms: r.duration_ms,
    })
}
