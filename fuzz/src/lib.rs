//! What the fuzz targets and the peak-RSS probe run: the content half of process-upload.
//!
//! `shared::process::process_key` reads the upload, checks emptiness and the hash, then turns the
//! bytes into what is stored or a rejection reason. That second half has no storage in it but
//! lives inside `process_key`; [`process_upload_bytes`] repeats it step for step (same functions,
//! same order, same limits) so that it can run on arbitrary bytes without S3 or DynamoDB. Keep
//! it in step with `shared/src/process.rs`.

use shared::convert::{process_image, ProcessedImage};
use shared::model::RejectReason;
use shared::policy::Limits;
use shared::sniff::{sniff, Sniffed};

/// What process-upload would store.
#[derive(Debug)]
pub enum Stored {
    /// Audio: stored as uploaded.
    Audio {
        content_type: &'static str,
    },
    Image(ProcessedImage),
}

/// The bytes of an upload (already known to hash to their key) → what is stored, or why not.
pub fn process_upload_bytes(bytes: &[u8], limits: &Limits) -> Result<Stored, RejectReason> {
    if bytes.len() as u64 > limits.max_any_bytes() {
        return Err(RejectReason::TooLarge);
    }
    if bytes.is_empty() {
        return Err(RejectReason::EmptyFile);
    }
    match sniff(bytes) {
        Sniffed::Unsupported(_) => Err(RejectReason::UnsupportedType),
        Sniffed::Audio(kind) => {
            if bytes.len() as u64 > limits.max_audio_bytes {
                return Err(RejectReason::TooLarge);
            }
            Ok(Stored::Audio { content_type: kind.content_type() })
        }
        Sniffed::Image(kind) => process_image(kind, bytes, limits).map(Stored::Image),
    }
}
