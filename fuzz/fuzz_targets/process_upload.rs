//! process-upload's content path on arbitrary bytes: sniff → (audio: duration from the container,
//! length limit; WAV/AIFF/FLAC decoded and encoded as MP3 when smaller) | (image: header pixel check → decode within limits → orient →
//! WebP or stripped original → thumbnail).
//!
//! A crash here is a finding: a panic (process-upload would catch it on its blocking thread and
//! reject the file as corrupt_media, but a panic in a codec is still a bug worth knowing), an
//! abort, a timeout (a hang), or memory above -rss_limit_mb. Beyond "does not crash", it checks
//! that whatever is accepted is sane: what is stored sniffs as the type it is stored as, and the
//! picture is within the pixel limit.
#![no_main]

use ankicollab_media_fuzz::process_upload_bytes;
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
            Ok(c) => eprintln!(
                "outcome: stored {} bytes of {} ({:?}x{:?}, {:?} ms), thumbnail {:?} bytes",
                c.stored.len(),
                c.content_type,
                c.width,
                c.height,
                c.duration_ms,
                c.thumbnail.as_ref().map(Vec::len)
            ),
            Err(reason) => eprintln!("outcome: rejected {}", reason.code()),
        }
    }
    let Ok(c) = outcome else { return };
    match (sniff(&c.stored), &c.thumbnail) {
        (Sniffed::Audio(kind), None) => {
            assert_eq!(kind.content_type(), c.content_type, "stored audio does not sniff as its content type");
            let ms = c.duration_ms.expect("audio without a duration");
            assert!(ms <= limits.max_audio_seconds * 1000, "accepted {ms} ms of audio");
            assert!(c.stored.len() <= data.len(), "stored audio is larger than the upload");
        }
        (Sniffed::Image(kind), Some(thumb)) => {
            let (w, h) = (c.width.unwrap_or(0), c.height.unwrap_or(0));
            assert!(w > 0 && h > 0, "accepted an empty picture");
            assert!(u64::from(w) * u64::from(h) <= limits.max_pixels, "accepted {w}x{h} pixels");
            assert_eq!(kind.content_type(), c.content_type, "stored bytes do not sniff as their content type");
            assert_eq!(sniff(thumb), Sniffed::Image(shared::sniff::ImageKind::WebP), "thumbnail is not WebP");
        }
        (Sniffed::Svg, Some(thumb)) => {
            assert_eq!(c.content_type, "image/svg+xml");
            assert!(shared::svg::sanitize(&c.stored).is_ok(), "stored SVG does not sanitise again");
            let text = String::from_utf8_lossy(&c.stored).to_ascii_lowercase();
            assert!(!text.contains("<script") && !text.contains("javascript:"), "active SVG stored");
            assert_eq!(sniff(thumb), Sniffed::Image(shared::sniff::ImageKind::WebP), "thumbnail is not WebP");
        }
        (other, thumb) => panic!("stored bytes sniff as {other:?} (thumbnail: {}), stored as {}", thumb.is_some(), c.content_type),
    }
});
