//! process-upload's content path on arbitrary bytes: sniff → (audio: stored as is) | (image:
//! header pixel check → decode within limits → orient → WebP or stripped original → thumbnail).
//!
//! A crash here is a finding: a panic (process-upload would catch it on its blocking thread and
//! reject the file as corrupt_media, but a panic in a codec is still a bug worth knowing), an
//! abort, a timeout (a hang), or memory above -rss_limit_mb. Beyond "does not crash", it checks
//! that whatever is accepted is sane: what is stored sniffs as the type it is stored as, and the
//! picture is within the pixel limit.
#![no_main]

use ankicollab_media_fuzz::{process_upload_bytes, Stored};
use libfuzzer_sys::fuzz_target;
use shared::policy::Limits;
use shared::sniff::{sniff, Sniffed};

/// `FUZZ_PRINT=1` prints each input's outcome (to run single files, e.g. for the peak-RSS numbers).
fn print() -> bool {
    static PRINT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PRINT.get_or_init(|| std::env::var_os("FUZZ_PRINT").is_some())
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let outcome = process_upload_bytes(data, &limits);
    if print() {
        match &outcome {
            Ok(Stored::Image(i)) => eprintln!(
                "outcome: stored {} bytes of {} ({}x{}, {:?}), thumbnail {} bytes",
                i.bytes.len(),
                i.content_type,
                i.width,
                i.height,
                i.encoding,
                i.thumbnail.len()
            ),
            Ok(Stored::Audio { content_type }) => eprintln!("outcome: stored as uploaded ({content_type})"),
            Err(reason) => eprintln!("outcome: rejected {}", reason.code()),
        }
    }
    match outcome {
        Err(_) | Ok(Stored::Audio { .. }) => {}
        Ok(Stored::Image(img)) => {
            assert!(img.width > 0 && img.height > 0, "accepted an empty picture");
            assert!(
                u64::from(img.width) * u64::from(img.height) <= limits.max_pixels,
                "accepted {}x{} pixels",
                img.width,
                img.height
            );
            match sniff(&img.bytes) {
                Sniffed::Image(kind) => {
                    assert_eq!(kind.content_type(), img.content_type, "stored bytes do not sniff as their content type")
                }
                other => panic!("stored bytes sniff as {other:?}, stored as {}", img.content_type),
            }
            assert_eq!(sniff(&img.thumbnail), Sniffed::Image(shared::sniff::ImageKind::WebP), "thumbnail is not WebP");
        }
    }
});
