//! Filenames as the media server accepts them, and the media a note's field HTML references.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Why `name` is not a media filename the media server accepts (Anki's rules: NFC, at most 120
/// bytes, none of `[ ] < > : " / ? * ^ \ |`, no control characters, not a Windows device name,
/// not ending in a dot or space), or None.
pub fn filename_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty filename");
    }
    if name.nfc().collect::<String>() != name {
        return Some("filename is not in NFC form");
    }
    if name.len() > 120 {
        return Some("filename is longer than 120 bytes");
    }
    let forbidden = |c: char| {
        c.is_control()
            || c == '\u{a0}'
            || matches!(c, '[' | ']' | '<' | '>' | ':' | '"' | '/' | '?' | '*' | '^' | '\\' | '|')
    };
    if name.chars().any(forbidden) {
        return Some("filename contains a character Anki forbids");
    }
    let stem = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    let device = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0');
    if name.trim().is_empty() || name.ends_with(['.', ' ']) || device {
        return Some("filename is reserved");
    }
    None
}

/// Whether `s` is a SHA-256 as the media server writes it: 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn html_media() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r#"(?is)<(?:img|audio|video|source|object|embed)\b[^>]*?\s(?:src|data)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))"#,
        )
        .expect("static regex")
    })
}

fn sound_tag() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\[sound:([^\]]+)\]").expect("static regex"))
}

/// The media files an HTML field references (`<img src>`, `<audio>`/`<video>`/`<source src>`,
/// `<object data>`, `<embed src>`, `[sound:…]`), as Anki's media check reads them: entities
/// decoded, `%xx` escapes decoded, URLs and absolute paths left out.
pub fn referenced_media(html: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in html_media().captures_iter(html) {
        if let Some(m) = c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3)) {
            add(&mut out, m.as_str());
        }
    }
    for c in sound_tag().captures_iter(html) {
        add(&mut out, &c[1]);
    }
    out
}

fn add(out: &mut BTreeSet<String>, raw: &str) {
    let name = percent_decode(&decode_entities(raw.trim()));
    if name.is_empty() || name.contains("://") || name.starts_with("data:") || name.starts_with('/') {
        return;
    }
    out.insert(name);
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        // Byte search: slicing at 12 could split a character.
        let Some(end) = rest.as_bytes().iter().take(12).position(|&b| b == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            e if e.starts_with("#x") || e.starts_with("#X") => {
                u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32)
            }
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_anki_finds() {
        let html = r#"front <img src="cell.png"> <IMG class=x SRC='a b.jpg'> <img src=bare.gif>
            [sound:heart.mp3] <audio controls src="beat.ogg"></audio> <img src="https://x.org/y.png">
            <img src="a &amp; b.png"> <img src="sp%20ace.png"> <object data="diagram.svg"></object>
            <img src="/etc/passwd"> <img data-src="not.png"> <img src="data:image/png;base64,xx">"#;
        let found: Vec<_> = referenced_media(html).into_iter().collect();
        assert_eq!(
            found,
            ["a & b.png", "a b.jpg", "bare.gif", "beat.ogg", "cell.png", "diagram.svg", "heart.mp3", "sp ace.png"]
        );
        assert!(referenced_media("no media").is_empty());
        assert_eq!(decode_entities("&#x41;&#66;&bogus;&"), "AB&bogus;&");
        assert_eq!(percent_decode("%zz%41%"), "%zzA%");
    }

    #[test]
    fn filenames_follow_ankis_rules() {
        for ok in ["cell.png", "日本語.mp3", "a b.png", "_font.woff", "com0.png", "console.png"] {
            assert_eq!(filename_problem(ok), None, "{ok}");
        }
        for bad in
            ["", "../x.png", "/etc/passwd", "C:\\x.png", "a\0.png", "dot.", "CON", "com1.mp3", "e\u{301}.png", "a?.png"]
        {
            assert!(filename_problem(bad).is_some(), "{bad:?}");
        }
        assert!(filename_problem(&"x".repeat(121)).is_some());
        assert!(is_sha256(&"a".repeat(64)) && !is_sha256(&"A".repeat(64)) && !is_sha256("abc"));
    }
}
