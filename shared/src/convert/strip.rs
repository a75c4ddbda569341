//! Lossless metadata removal, for when keeping the original bytes beats re-encoding.
//!
//! Each function walks the container and copies only what is needed to show the picture. It
//! returns `None` when the structure is not exactly what it claims, or when bytes follow the end of
//! the image (a polyglot payload): then the caller re-encodes instead.

use super::super::sniff::ImageKind;

pub fn strip_metadata(kind: ImageKind, b: &[u8]) -> Option<Vec<u8>> {
    match kind {
        ImageKind::Png => strip_png(b),
        ImageKind::Jpeg => strip_jpeg(b),
        ImageKind::Gif => strip_gif(b),
        ImageKind::WebP => strip_webp(b),
        // Not shown by every Anki client; always converted.
        ImageKind::Bmp | ImageKind::Tiff => None,
    }
}

fn be32(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

fn le32(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

fn strip_png(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(b.get(..8)?);
    let mut at = 8;
    loop {
        let len = be32(b, at)?;
        let end = at.checked_add(12)?.checked_add(len)?;
        let chunk = b.get(at..end)?;
        let kind = &chunk[4..8];
        // Text, EXIF and timestamps say things about the author; colour chunks change the picture.
        if !matches!(kind, b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf" | b"tIME") {
            out.extend_from_slice(chunk);
        }
        at = end;
        if kind == b"IEND" {
            return (at == b.len()).then_some(out);
        }
    }
}

fn strip_jpeg(b: &[u8]) -> Option<Vec<u8>> {
    let (out, end) = walk_jpeg(b)?;
    (end == b.len()).then_some(out)
}

/// Whether a JPEG's segments and scans run all the way to its end-of-image marker; a truncated
/// file decodes "successfully" into a picture with a grey bottom, which we refuse.
pub fn jpeg_is_complete(b: &[u8]) -> bool {
    walk_jpeg(b).is_some()
}

/// Copies a JPEG without its metadata segments, up to and including EOI. Returns the copy and the
/// offset just past EOI, or `None` if the structure breaks before EOI.
fn walk_jpeg(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..2]);
    let mut at = 2;
    loop {
        if *b.get(at)? != 0xFF {
            return None;
        }
        let marker = *b.get(at + 1)?;
        match marker {
            0xFF => at += 1, // fill byte
            0xD9 => {
                out.extend_from_slice(&b[at..at + 2]);
                return Some((out, at + 2));
            }
            0xD0..=0xD7 | 0x01 => {
                out.extend_from_slice(&b[at..at + 2]);
                at += 2;
            }
            _ => {
                let len = ((*b.get(at + 2)? as usize) << 8) | *b.get(at + 3)? as usize;
                if len < 2 {
                    return None;
                }
                let end = at + 2 + len;
                let segment = b.get(at..end)?;
                // Keep JFIF (APP0), ICC (APP2) and Adobe (APP14, colour transform); drop EXIF/XMP
                // (APP1), IPTC (APP13), other APPn and comments.
                let drop = matches!(marker, 0xE1 | 0xE3..=0xED | 0xEF | 0xFE);
                if !drop {
                    out.extend_from_slice(segment);
                }
                at = end;
                if marker == 0xDA {
                    // Entropy-coded data runs until a marker that is not a stuffed 0xFF00 or RSTn.
                    let start = at;
                    while at + 1 < b.len() {
                        if b[at] == 0xFF && !matches!(b[at + 1], 0x00 | 0xD0..=0xD7) {
                            break;
                        }
                        at += 1;
                    }
                    if at + 1 >= b.len() {
                        return None;
                    }
                    out.extend_from_slice(&b[start..at]);
                }
            }
        }
    }
}

fn strip_gif(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let header = b.get(..13)?;
    out.extend_from_slice(header);
    let mut at = 13;
    let flags = header[10];
    if flags & 0x80 != 0 {
        let table = 3 * (1usize << ((flags & 7) + 1));
        out.extend_from_slice(b.get(at..at + table)?);
        at += table;
    }
    // Returns the end of a run of data sub-blocks starting at `at`.
    let sub_blocks = |mut at: usize| -> Option<usize> {
        loop {
            let n = *b.get(at)? as usize;
            at += 1 + n;
            if n == 0 {
                return (at <= b.len()).then_some(at);
            }
        }
    };
    loop {
        match *b.get(at)? {
            0x3B => {
                out.push(0x3B);
                return (at + 1 == b.len()).then_some(out);
            }
            0x21 => {
                let label = *b.get(at + 1)?;
                let end = sub_blocks(at + 2)?;
                let keep = match label {
                    0xFE => false, // comment
                    // Application extensions: keep only the looping one (NETSCAPE2.0 / ANIMEXTS1.0).
                    0xFF => {
                        let id = b.get(at + 3..at + 14)?;
                        id == b"NETSCAPE2.0" || id == b"ANIMEXTS1.0"
                    }
                    _ => true,
                };
                if keep {
                    out.extend_from_slice(&b[at..end]);
                }
                at = end;
            }
            0x2C => {
                let desc = b.get(at..at + 10)?;
                let mut end = at + 10;
                if desc[9] & 0x80 != 0 {
                    end += 3 * (1usize << ((desc[9] & 7) + 1));
                }
                end = sub_blocks(end + 1)?; // +1: LZW minimum code size
                out.extend_from_slice(b.get(at..end)?);
                at = end;
            }
            _ => return None,
        }
    }
}

fn strip_webp(b: &[u8]) -> Option<Vec<u8>> {
    if b.get(..4)? != b"RIFF" || b.get(8..12)? != b"WEBP" {
        return None;
    }
    let riff_end = le32(b, 4)?.checked_add(8)?;
    if riff_end != b.len() {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..12]);
    let mut at = 12;
    let mut vp8x_at = None;
    while at < riff_end {
        let len = le32(b, at + 4)?;
        let end = at.checked_add(8)?.checked_add(len)?.checked_add(len & 1)?;
        let chunk = b.get(at..end)?;
        match &chunk[..4] {
            b"EXIF" | b"XMP " => {}
            b"VP8X" => {
                vp8x_at = Some(out.len());
                out.extend_from_slice(chunk);
            }
            _ => out.extend_from_slice(chunk),
        }
        at = end;
    }
    if let Some(v) = vp8x_at {
        // Clear the EXIF (0x08) and XMP (0x04) flags now that their chunks are gone.
        *out.get_mut(v + 8)? &= !0x0C;
    }
    let size = u32::try_from(out.len() - 8).ok()?;
    out[4..8].copy_from_slice(&size.to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0, 0, 0, 0]); // CRC is not checked here
        c
    }

    #[test]
    fn png_drops_text_and_refuses_trailing_bytes() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(png_chunk(b"IHDR", &[0; 13]));
        png.extend(png_chunk(b"tEXt", b"Author\0me"));
        png.extend(png_chunk(b"IDAT", &[1, 2, 3]));
        png.extend(png_chunk(b"IEND", &[]));
        let out = strip_png(&png).unwrap();
        assert_eq!(out.len(), png.len() - (12 + 9));
        assert!(!out.windows(4).any(|w| w == b"tEXt"));
        png.extend_from_slice(b"<html>");
        assert!(strip_png(&png).is_none());
    }

    #[test]
    fn jpeg_drops_exif_and_comment() {
        let mut j = vec![0xFF, 0xD8];
        j.extend([0xFF, 0xE1, 0x00, 0x08]);
        j.extend(b"Exif\0\0");
        j.extend([0xFF, 0xFE, 0x00, 0x04, b'h', b'i']);
        j.extend([0xFF, 0xDA, 0x00, 0x02]);
        j.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        j.extend([0xFF, 0xD9]);
        let out = strip_jpeg(&j).unwrap();
        assert_eq!(out, vec![0xFF, 0xD8, 0xFF, 0xDA, 0, 2, 0x12, 0xFF, 0, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD9]);
        j.extend(b"<script>");
        assert!(strip_jpeg(&j).is_none());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            for kind in [ImageKind::Png, ImageKind::Jpeg, ImageKind::Gif, ImageKind::WebP] {
                let mut d = data.clone();
                let magic: &[u8] = match kind {
                    ImageKind::Png => b"\x89PNG\r\n\x1a\n",
                    ImageKind::Jpeg => &[0xFF, 0xD8],
                    ImageKind::Gif => b"GIF89a",
                    _ => b"RIFF\x10\0\0\0WEBP",
                };
                d.splice(0..0, magic.iter().copied());
                let _ = strip_metadata(kind, &d);
            }
        }
    }
}
