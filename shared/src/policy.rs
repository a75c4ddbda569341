//! What we accept: identifiers, filenames, size/pixel limits and how hard conversion works. One place,
//! used by every entry point.

use unicode_normalization::UnicodeNormalization;

/// Configurable limits (defaults from DESIGN.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest image (or SVG) original accepted; what is stored must also fit `max_stored_bytes`.
    pub max_image_bytes: u64,
    /// The largest image stored (after conversion): AnkiCollab's 10 MB, applied to the result as
    /// AnkiCollab applied it to the plugin's converted output.
    pub max_stored_image_bytes: u64,
    pub max_audio_bytes: u64,
    /// Audio playing longer than this is refused (`too_long`).
    pub max_audio_seconds: u64,
    pub max_pixels: u64,
    /// Decoded pixels across all frames of an animation.
    pub max_animation_pixels: u64,
    pub max_upload_batch: usize,
    /// Per user and UTC day: charged when upload URLs are issued, settled when processing ends.
    pub daily_upload_bytes: u64,
    pub daily_upload_files: u64,
    pub max_download_batch: usize,
    pub max_body_bytes: usize,
    pub thumbnail_edge: u32,
    /// How hard image conversion works for smaller files.
    pub effort: Effort,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_image_bytes: 50 * 1024 * 1024,
            max_stored_image_bytes: 10 * 1024 * 1024,
            max_audio_bytes: 25 * 1024 * 1024,
            max_audio_seconds: 300,
            max_pixels: 50_000_000,
            max_animation_pixels: 50_000_000,
            max_upload_batch: 500,
            // AnkiCollab allows 100,000 files a user a day; 20 GiB is that many at today's average
            // size (about 200 kB).
            daily_upload_bytes: 20 * 1024 * 1024 * 1024,
            daily_upload_files: 100_000,
            max_download_batch: 1000,
            max_body_bytes: 512 * 1024,
            thumbnail_edge: 256,
            effort: Effort::default(),
        }
    }
}

/// How hard process-upload works for smaller files (`CONVERSION_EFFORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effort {
    /// One lossy encoding at the plugin's settings (and lossless for graphics).
    Fast,
    /// Also searches each image for the smallest lossy encoding that scores at least its q85
    /// encoding's SSIM (`convert::SearchPlan`), for a few encodings' time (BENCHMARKS.md,
    /// "Conversion"). Bytes are paid at every download, the time once.
    #[default]
    Smallest,
}

impl std::str::FromStr for Effort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fast" => Ok(Effort::Fast),
            "smallest" => Ok(Effort::Smallest),
            other => Err(format!("{other:?} is not fast or smallest")),
        }
    }
}

impl Limits {
    /// The most any accepted file may weigh, before we know its type.
    pub fn max_any_bytes(&self) -> u64 {
        self.max_image_bytes.max(self.max_audio_bytes)
    }

    pub fn max_bytes_for(&self, class: MediaClass) -> u64 {
        match class {
            MediaClass::Image => self.max_image_bytes,
            MediaClass::Audio => self.max_audio_bytes,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaClass {
    Image,
    Audio,
}

/// What a filename's extension promises. Only a hint for early refusal: process-upload decides by
/// the bytes.
pub fn class_from_filename(filename: &str) -> Option<MediaClass> {
    let ext = filename.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "png" | "jpg" | "jpeg" | "jfif" | "gif" | "webp" | "bmp" | "tif" | "tiff" | "svg" => Some(MediaClass::Image),
        "mp3" | "ogg" | "oga" | "opus" | "wav" | "flac" | "aif" | "aiff" | "aifc" | "m4a" => Some(MediaClass::Audio),
        _ => None,
    }
}

pub const MAX_FILENAME_BYTES: usize = 120;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FilenameError {
    #[error("filename is empty")]
    Empty,
    #[error("filename is longer than 120 bytes")]
    TooLong,
    #[error("filename contains a character Anki forbids")]
    ForbiddenChar,
    #[error("filename is reserved: a path component, a Windows device name, or ending in a dot or space")]
    Reserved,
}

/// Anki's media filename rules (rslib `media/files.rs`): NFC, none of `[ ] < > : " / ? * ^ \ |`,
/// control characters or no-break spaces, at most 120 bytes, not a Windows device name (`CON`,
/// `com1.mp3`, …), not ending in a dot or space, not `.`/`..`. Names are normalised to NFC (what
/// Anki itself stores) and refused otherwise: Anki would rename such a file when it saves it, so
/// the note's reference would no longer find it, and renaming here would change names clients
/// already hold. So a name has exactly one spelling everywhere.
pub fn normalize_filename(name: &str) -> Result<String, FilenameError> {
    let nfc: String = name.nfc().collect();
    if nfc.is_empty() {
        return Err(FilenameError::Empty);
    }
    if nfc.len() > MAX_FILENAME_BYTES {
        return Err(FilenameError::TooLong);
    }
    let forbidden = |c: char| {
        c.is_control()
            || c == '\u{a0}'
            || matches!(c, '[' | ']' | '<' | '>' | ':' | '"' | '/' | '?' | '*' | '^' | '\\' | '|')
    };
    if nfc.chars().any(forbidden) {
        return Err(FilenameError::ForbiddenChar);
    }
    if nfc.trim().is_empty() || nfc.ends_with(['.', ' ']) || is_windows_device_name(&nfc) {
        return Err(FilenameError::Reserved);
    }
    Ok(nfc)
}

/// `CON`, `prn.png`, `Com1.mp3`…: names Windows reserves, with or without an extension.
fn is_windows_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && matches!(stem.as_bytes()[3], b'1'..=b'9'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deck: 1-64 of A-Z a-z 0-9 _ -")]
pub struct InvalidDeck;

pub fn check_deck(deck: &str) -> Result<(), InvalidDeck> {
    if is_valid_deck(deck) {
        Ok(())
    } else {
        Err(InvalidDeck)
    }
}

/// A deck id: 1–64 of `[A-Za-z0-9_-]`.
pub fn is_valid_deck(deck: &str) -> bool {
    (1..=64).contains(&deck.len()) && deck.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn filenames() {
        assert_eq!(normalize_filename("cell.png").as_deref(), Ok("cell.png"));
        // "é" as e + combining acute becomes the single NFC code point.
        assert_eq!(normalize_filename("cafe\u{301}.mp3").as_deref(), Ok("caf\u{e9}.mp3"));
        assert_eq!(normalize_filename(""), Err(FilenameError::Empty));
        assert_eq!(normalize_filename("../etc/passwd"), Err(FilenameError::ForbiddenChar));
        assert_eq!(normalize_filename("a\\b.png"), Err(FilenameError::ForbiddenChar));
        assert_eq!(normalize_filename("a\0.png"), Err(FilenameError::ForbiddenChar));
        assert_eq!(normalize_filename("a\n.png"), Err(FilenameError::ForbiddenChar));
        assert_eq!(normalize_filename(".."), Err(FilenameError::Reserved));
        assert_eq!(normalize_filename(&"a".repeat(121)), Err(FilenameError::TooLong));
        assert!(normalize_filename(&"a".repeat(120)).is_ok());
        // 40 three-byte characters are 120 bytes; 41 are too many.
        assert!(normalize_filename(&"€".repeat(40)).is_ok());
        assert_eq!(normalize_filename(&"€".repeat(41)), Err(FilenameError::TooLong));
        // What Anki strips or renames is refused, not rewritten.
        for name in ["a[1].png", "x^2.png", "a\u{a0}b.png", "a<b>.png", "a:b.png"] {
            assert_eq!(normalize_filename(name), Err(FilenameError::ForbiddenChar), "{name}");
        }
        for name in ["con", "CON.png", "nul.mp3", "Com1.png", "lpt9", "a.png.", "a.png ", "...", " "] {
            assert_eq!(normalize_filename(name), Err(FilenameError::Reserved), "{name:?}");
        }
        for name in ["console.png", "com10.png", "com0.png", "a.b.png", "conference.mp3", ".hidden.png", "a b.png"] {
            assert!(normalize_filename(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn decks() {
        assert!(is_valid_deck("d1"));
        assert!(is_valid_deck(&"a".repeat(64)));
        assert!(!is_valid_deck(&"a".repeat(65)));
        assert!(!is_valid_deck(""));
        assert!(!is_valid_deck("a/b"));
        assert!(!is_valid_deck("a b"));
    }

    #[test]
    fn classes() {
        assert_eq!(class_from_filename("a.PNG"), Some(MediaClass::Image));
        assert_eq!(class_from_filename("a.oga"), Some(MediaClass::Audio));
        assert_eq!(class_from_filename("a.Flac"), Some(MediaClass::Audio));
        assert_eq!(class_from_filename("a.aiff"), Some(MediaClass::Audio));
        assert_eq!(class_from_filename("a.svg"), Some(MediaClass::Image));
        assert_eq!(class_from_filename("a.pdf"), None);
        assert_eq!(class_from_filename("noext"), None);
    }

    proptest! {
        #[test]
        fn normalized_names_are_stable_and_safe(name in "\\PC{0,60}") {
            if let Ok(n) = normalize_filename(&name) {
                prop_assert_eq!(normalize_filename(&n), Ok(n.clone()));
                prop_assert!(n.len() <= MAX_FILENAME_BYTES);
                prop_assert!(!n.contains('/') && !n.contains('\\') && !n.contains('\0'));
                prop_assert!(!n.ends_with('.') && !n.ends_with(' ') && n != "..");
            }
        }
    }
}
