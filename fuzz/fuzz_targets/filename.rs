//! Filename and identifier rules (`shared::policy`), which every entry point shares: whatever
//! `normalize_filename` accepts is NFC, at most 120 bytes, free of `[ ] / \ : * ? " < > ^ |`,
//! control characters and no-break spaces, not blank, not ending in a dot or space, and a fixed
//! point (normalising it again changes nothing).
//! Deck ids and hashes: what is accepted matches the documented patterns exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::hash::Sha256Hash;
use shared::policy::{is_valid_deck, normalize_filename, MAX_FILENAME_BYTES};
use unicode_normalization::is_nfc;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(n) = normalize_filename(s) {
        assert!(is_nfc(&n), "{n:?} is not NFC");
        assert!(!n.is_empty() && n.len() <= MAX_FILENAME_BYTES, "{n:?} has {} bytes", n.len());
        assert!(
            !n.chars().any(|c| c.is_control() || "[]/\\:*?\"<>^|\u{a0}".contains(c)),
            "{n:?} keeps a forbidden character"
        );
        assert!(!n.trim().is_empty() && !n.ends_with(['.', ' ']), "{n:?} is blank or ends in a dot or space");
        assert_eq!(normalize_filename(&n).as_deref(), Ok(n.as_str()), "normalising twice changed {n:?}");
    }
    let deck_ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    assert_eq!(is_valid_deck(s), deck_ok, "deck {s:?}");
    let hash_ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match Sha256Hash::parse(s) {
        Ok(h) => {
            assert!(hash_ok, "accepted hash {s:?}");
            assert_eq!(h.to_hex(), s);
        }
        Err(_) => assert!(!hash_ok, "refused hash {s:?}"),
    }
});
