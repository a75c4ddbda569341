//! What the fuzz targets and the peak-RSS probe run: the content half of process-upload.
//!
//! `shared::process::process_key` reads the upload, checks emptiness and the hash, then turns the
//! bytes into what is stored or a rejection reason with `shared::process::content`, which has no
//! storage in it: [`process_upload_bytes`] runs the same on arbitrary bytes.

use shared::model::RejectReason;
use shared::policy::Limits;
pub use shared::process::Converted;

/// The bytes of an upload (already known to hash to their key) → what is stored, or why not:
/// the size cap and emptiness check `read_and_verify` makes, then `shared::process::content`.
pub fn process_upload_bytes(bytes: &[u8], limits: &Limits) -> Result<Converted, RejectReason> {
    if bytes.len() as u64 > limits.max_any_bytes() {
        return Err(RejectReason::TooLarge);
    }
    if bytes.is_empty() {
        return Err(RejectReason::EmptyFile);
    }
    shared::process::content(bytes.to_vec(), limits)
}
