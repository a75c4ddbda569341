//! The records we keep about media, independent of where they are stored.

use serde::{Deserialize, Serialize};

use crate::hash::Sha256Hash;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaStatus {
    /// An upload URL was issued; the bytes have not been processed yet.
    Pending,
    /// Stored and servable.
    Ready,
    /// The bytes were refused; `reason` says why.
    Rejected,
    /// Referenced by a note but never uploaded.
    Missing,
    /// The sweeper is removing it; nothing may reference or store it until it is gone.
    Deleting,
}

/// Why a file was refused. The string forms are stable reason codes that clients read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    #[error("too_large")]
    TooLarge,
    #[error("empty_file")]
    EmptyFile,
    #[error("unsupported_type")]
    UnsupportedType,
    #[error("too_many_pixels")]
    TooManyPixels,
    /// Audio that plays longer than the limit (`Limits::max_audio_seconds`).
    #[error("too_long")]
    TooLong,
    #[error("corrupt_media")]
    CorruptMedia,
    /// An SVG with more elements or deeper nesting than processing takes.
    #[error("too_complex")]
    TooComplex,
    #[error("hash_mismatch")]
    HashMismatch,
    #[error("bad_hash")]
    BadHash,
    #[error("bad_filename")]
    BadFilename,
    #[error("quota_exceeded")]
    QuotaExceeded,
    /// The same hash was asked for earlier today with another size, and that upload is pending.
    #[error("size_mismatch")]
    SizeMismatch,
    /// The hash is being deleted right now; ask again in a moment.
    #[error("retry_later")]
    RetryLater,
}

impl RejectReason {
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::EmptyFile => "empty_file",
            RejectReason::UnsupportedType => "unsupported_type",
            RejectReason::TooManyPixels => "too_many_pixels",
            RejectReason::TooLong => "too_long",
            RejectReason::CorruptMedia => "corrupt_media",
            RejectReason::TooComplex => "too_complex",
            RejectReason::HashMismatch => "hash_mismatch",
            RejectReason::BadHash => "bad_hash",
            RejectReason::BadFilename => "bad_filename",
            RejectReason::QuotaExceeded => "quota_exceeded",
            RejectReason::SizeMismatch => "size_mismatch",
            RejectReason::RetryLater => "retry_later",
        }
    }

    /// Rejections that say nothing about the content of a hash (the upload went wrong, not the
    /// file): a fresh upload may be tried. The others are final for that hash.
    pub const RETRYABLE: [RejectReason; 2] = [RejectReason::HashMismatch, RejectReason::QuotaExceeded];

    pub fn allows_retry(self) -> bool {
        Self::RETRYABLE.contains(&self)
    }
}

impl MediaRecord {
    /// Refused for good: a rejection with a final reason. A rejected record without a reason
    /// says nothing final about the content, so it is not.
    pub fn finally_rejected(&self) -> bool {
        self.status == MediaStatus::Rejected && self.reason.is_some_and(|reason| !reason.allows_retry())
    }
}

/// The media record of one hash: what DynamoDB holds per file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaRecord {
    pub hash: Sha256Hash,
    pub status: MediaStatus,
    /// Size of the uploaded original in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Playing time of audio, read from its container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    /// Key of the final object, set when ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumb_key: Option<String>,
    /// SHA-256 of the stored bytes, when they differ from the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_hash: Option<Sha256Hash>,
    /// When the last upload URL for it expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader: Option<String>,
    #[serde(default)]
    pub ref_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Set on alias items only: this hash is the stored (converted) form of `alias_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<Sha256Hash>,
    /// While `deleting`: until when the sweep that claimed the record may still be removing its
    /// objects (RFC 3339). Past it, the claim is abandoned and anyone may take the record back
    /// (`lifecycle::take_back`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting_until: Option<String>,
}

impl MediaRecord {
    pub fn new(hash: Sha256Hash, status: MediaStatus) -> Self {
        Self {
            hash,
            status,
            size: None,
            stored_size: None,
            content_type: None,
            width: None,
            height: None,
            duration_ms: None,
            reason: None,
            stored_key: None,
            thumb_key: None,
            stored_hash: None,
            upload_expires_at: None,
            uploader: None,
            ref_count: 0,
            created_at: None,
            updated_at: None,
            alias_of: None,
            deleting_until: None,
        }
    }
}

/// What processing produced, written onto the record when it becomes ready.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMedia {
    pub stored_key: String,
    pub thumb_key: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub stored_size: u64,
    pub stored_hash: Sha256Hash,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
}

/// Keys in the bucket, derived from the hash: one place, so no two modules disagree.
#[derive(Debug, Clone)]
pub struct Keys {
    pub upload_prefix: String,
    pub media_prefix: String,
    pub thumb_prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self { upload_prefix: "uploads/".into(), media_prefix: "media/".into(), thumb_prefix: "thumbs/".into() }
    }
}

impl Keys {
    pub fn upload(&self, h: &Sha256Hash) -> String {
        format!("{}{h}", self.upload_prefix)
    }
    pub fn media(&self, h: &Sha256Hash) -> String {
        format!("{}{h}", self.media_prefix)
    }
    pub fn thumb(&self, h: &Sha256Hash) -> String {
        format!("{}{h}.webp", self.thumb_prefix)
    }
    /// The hash an upload key names, if it is one.
    pub fn parse_upload(&self, key: &str) -> Option<Sha256Hash> {
        Sha256Hash::parse(key.strip_prefix(&self.upload_prefix)?).ok()
    }
}
