//! Lossless metadata removal, for when keeping the original bytes beats re-encoding, and the
//! JPEG segment walk it rests on (also where the decoder finds the Exif orientation).
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
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(b.get(..2)?);
    for segment in jpeg_segments(b)? {
        let segment = segment?;
        // Keep JFIF (APP0), ICC (APP2) and Adobe (APP14, colour transform); drop EXIF/XMP (APP1),
        // IPTC (APP13), other APPn and comments.
        if !matches!(segment.marker, 0xE1 | 0xE3..=0xED | 0xEF | 0xFE) {
            out.extend_from_slice(segment.bytes);
        }
        if segment.marker == 0xD9 {
            return Some((out, segment.end));
        }
    }
    None
}

/// The payload of a JPEG's first Exif APP1 segment before its first scan (after `Exif\0\0`), as
/// Pillow and browsers take it. Read here rather than by libjpeg: saving markers makes libjpeg
/// append each to the end of a linked list, quadratic in their number, and a 10 MB file of empty
/// APP1 segments would decode for hours.
pub fn jpeg_exif(b: &[u8]) -> Option<&[u8]> {
    jpeg_segments(b)?
        .map_while(std::convert::identity)
        .take_while(|segment| segment.marker != 0xDA)
        .filter(|segment| segment.marker == 0xE1)
        .find_map(|segment| segment.payload.strip_prefix(b"Exif\0\0"))
}

/// One marker of a JPEG with what belongs to it: the length-prefixed segment, and for a scan (SOS)
/// the entropy-coded data after it.
struct Segment<'a> {
    marker: u8,
    /// From the marker through its data.
    bytes: &'a [u8],
    /// The segment after its length field (empty for markers without one).
    payload: &'a [u8],
    /// Offset just past `bytes`.
    end: usize,
}

/// The markers after SOI in file order, ending after EOI; `None` for a file that does not start
/// with SOI, and an item of `None` (then the end) where the structure breaks.
fn jpeg_segments(b: &[u8]) -> Option<impl Iterator<Item = Option<Segment<'_>>>> {
    let mut at = b.starts_with(&[0xFF, 0xD8]).then_some(2)?;
    let mut done = false;
    Some(std::iter::from_fn(move || {
        if done {
            return None;
        }
        let segment = next_segment(b, &mut at);
        done = segment.as_ref().is_none_or(|s| s.marker == 0xD9);
        Some(segment)
    }))
}

fn next_segment<'a>(b: &'a [u8], at: &mut usize) -> Option<Segment<'a>> {
    while *b.get(*at)? == 0xFF && *b.get(*at + 1)? == 0xFF {
        *at += 1; // fill byte
    }
    if *b.get(*at)? != 0xFF {
        return None;
    }
    let start = *at;
    let marker = *b.get(start + 1)?;
    let (payload, mut end) = match marker {
        0xD0..=0xD9 | 0x01 => (&b[start + 2..start + 2], start + 2),
        _ => {
            let len = usize::from(u16::from_be_bytes([*b.get(start + 2)?, *b.get(start + 3)?]));
            if len < 2 {
                return None;
            }
            (b.get(start + 4..start + 2 + len)?, start + 2 + len)
        }
    };
    if marker == 0xDA {
        // Entropy-coded data runs until a marker that is not a stuffed 0xFF00 or RSTn.
        while end + 1 < b.len() && (b[end] != 0xFF || matches!(b[end + 1], 0x00 | 0xD0..=0xD7)) {
            end += 1;
        }
        if end + 1 >= b.len() {
            return None;
        }
    }
    *at = end;
    Some(Segment { marker, bytes: &b[start..end], payload, end })
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

    /// The first APP1 that is Exif, before the first scan: not XMP's APP1, not a later Exif, not one
    /// after the scan, and nothing from a file whose structure breaks before it.
    #[test]
    fn jpeg_exif_is_the_first_exif_segment_before_the_scan() {
        let app1 = |data: &[u8]| {
            let mut s = vec![0xFF, 0xE1];
            s.extend_from_slice(&(data.len() as u16 + 2).to_be_bytes());
            s.extend_from_slice(data);
            s
        };
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xFF]; // a fill byte before the first marker
        j.extend(app1(b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>"));
        j.extend(app1(b"Exif\0\0first"));
        j.extend(app1(b"Exif\0\0second"));
        assert_eq!(jpeg_exif(&j), Some(&b"first"[..]));

        let mut scan_first = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34];
        scan_first.extend(app1(b"Exif\0\0late"));
        scan_first.extend([0xFF, 0xD9]);
        assert_eq!(jpeg_exif(&scan_first), None);

        let mut broken = vec![0xFF, 0xD8, 0x00];
        broken.extend(app1(b"Exif\0\0hidden"));
        assert_eq!(jpeg_exif(&broken), None);
        assert_eq!(jpeg_exif(&j[2..]), None, "no SOI");
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
                let _ = jpeg_exif(&d);
            }
        }
    }
}
