//! Type detection from magic bytes. The filename and any client-supplied type are never trusted.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
    Gif,
    WebP,
    Bmp,
    Tiff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioKind {
    Mp3,
    Ogg,
    Wav,
    Aiff,
    Flac,
    M4a,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Image(ImageKind),
    /// An XML document whose root element is `svg` (stored only once sanitised: `crate::svg`).
    Svg,
    Audio(AudioKind),
    /// Not something we store; the string says what it looked like (for logs).
    Unsupported(&'static str),
}

impl ImageKind {
    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Gif => "image/gif",
            ImageKind::WebP => "image/webp",
            ImageKind::Bmp => "image/bmp",
            ImageKind::Tiff => "image/tiff",
        }
    }

    pub fn image_format(self) -> image::ImageFormat {
        match self {
            ImageKind::Png => image::ImageFormat::Png,
            ImageKind::Jpeg => image::ImageFormat::Jpeg,
            ImageKind::Gif => image::ImageFormat::Gif,
            ImageKind::WebP => image::ImageFormat::WebP,
            ImageKind::Bmp => image::ImageFormat::Bmp,
            ImageKind::Tiff => image::ImageFormat::Tiff,
        }
    }
}

impl AudioKind {
    pub fn content_type(self) -> &'static str {
        match self {
            AudioKind::Mp3 => "audio/mpeg",
            AudioKind::Ogg => "audio/ogg",
            AudioKind::Wav => "audio/wav",
            AudioKind::Aiff => "audio/aiff",
            AudioKind::Flac => "audio/flac",
            AudioKind::M4a => "audio/mp4",
        }
    }
}

pub fn sniff(b: &[u8]) -> Sniffed {
    use Sniffed::*;
    if b.is_empty() {
        return Unsupported("empty");
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Image(ImageKind::Png);
    }
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Image(ImageKind::Jpeg);
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Image(ImageKind::Gif);
    }
    if b.len() >= 12 && &b[..4] == b"RIFF" {
        match &b[8..12] {
            b"WEBP" => return Image(ImageKind::WebP),
            b"WAVE" => return Audio(AudioKind::Wav),
            _ => return Unsupported("riff"),
        }
    }
    if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        return Image(ImageKind::Tiff);
    }
    if is_bmp(b) {
        return Image(ImageKind::Bmp);
    }
    if b.starts_with(b"fLaC") {
        return Audio(AudioKind::Flac);
    }
    if b.len() >= 12 && &b[..4] == b"FORM" && matches!(&b[8..12], b"AIFF" | b"AIFC") {
        return Audio(AudioKind::Aiff);
    }
    if b.starts_with(b"OggS") {
        return if ogg_codec_allowed(b) { Audio(AudioKind::Ogg) } else { Unsupported("ogg-other") };
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        return match &b[8..12] {
            b"M4A " | b"M4B " | b"mp42" | b"isom" | b"mp41" | b"iso2" => Audio(AudioKind::M4a),
            _ => Unsupported("iso-bmff"),
        };
    }
    if is_mp3(b) {
        return Audio(AudioKind::Mp3);
    }
    if b.starts_with(b"\x7fELF") || b.starts_with(b"MZ") {
        return Unsupported("executable");
    }
    if b.starts_with(b"PK\x03\x04") {
        return Unsupported("zip");
    }
    if looks_like_markup(b) {
        return if svg_root(b) { Svg } else { Unsupported("markup") };
    }
    Unsupported("unknown")
}

fn is_bmp(b: &[u8]) -> bool {
    // "BM" alone is too weak: also require zero reserved fields and a known DIB header size.
    if b.len() < 18 || &b[..2] != b"BM" {
        return false;
    }
    let reserved = u32::from_le_bytes([b[6], b[7], b[8], b[9]]);
    let dib = u32::from_le_bytes([b[14], b[15], b[16], b[17]]);
    reserved == 0 && matches!(dib, 12 | 40 | 52 | 56 | 64 | 108 | 124)
}

fn ogg_codec_allowed(b: &[u8]) -> bool {
    // The first page carries the codec's identification header right after the segment table.
    if b.len() < 28 {
        return false;
    }
    let segments = b[26] as usize;
    let start = 27 + segments;
    let Some(payload) = b.get(start..) else {
        return false;
    };
    payload.starts_with(b"\x01vorbis") || payload.starts_with(b"OpusHead") || payload.starts_with(b"\x7fFLAC")
}

/// What an MPEG audio frame header says about its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MpegFrame {
    /// Bytes, header included.
    pub len: usize,
    pub samples: u32,
    pub rate: u32,
    pub mpeg1: bool,
    pub mono: bool,
}

/// The MPEG audio frame whose header starts `h`, or None if it is not a valid header.
pub(crate) fn mpeg_frame(h: &[u8]) -> Option<MpegFrame> {
    if h.len() < 4 || h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0: 2.5, 1: reserved, 2: 2, 3: 1
    let layer = (h[1] >> 1) & 3; // 1: III, 2: II, 3: I
    let bitrate_idx = (h[2] >> 4) as usize;
    let rate_idx = ((h[2] >> 2) & 3) as usize;
    let padding = ((h[2] >> 1) & 1) as usize;
    if version == 1 || layer == 0 || bitrate_idx == 0 || bitrate_idx == 15 || rate_idx == 3 {
        return None;
    }
    const V1: [[u32; 15]; 3] = [
        [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
        [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
        [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    ];
    const V2: [[u32; 15]; 3] = [
        [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    ];
    let layer_row = (3 - layer) as usize; // 0: I, 1: II, 2: III
    let kbps = if version == 3 { V1 } else { V2 }[layer_row][bitrate_idx] as usize;
    let rate = [44100usize, 48000, 32000][rate_idx]
        >> match version {
            3 => 0,
            2 => 1,
            _ => 2,
        };
    let len = match (layer_row, version) {
        (0, _) => (12 * kbps * 1000 / rate + padding) * 4,
        (2, v) if v != 3 => 72 * kbps * 1000 / rate + padding,
        _ => 144 * kbps * 1000 / rate + padding,
    };
    let samples = match (layer_row, version) {
        (0, _) => 384,
        (2, v) if v != 3 => 576,
        _ => 1152,
    };
    (len >= 4).then_some(MpegFrame { len, samples, rate: rate as u32, mpeg1: version == 3, mono: h[3] >> 6 == 3 })
}

fn is_mp3(b: &[u8]) -> bool {
    let mut start = 0;
    if b.len() >= 10 && b.starts_with(b"ID3") {
        // Synchsafe tag size; the audio frames follow the tag.
        let size = b[6..10].iter().fold(0usize, |acc, &x| (acc << 7) | (x & 0x7F) as usize);
        let footer = if b[5] & 0x10 != 0 { 10 } else { 0 };
        start = 10 + size + footer;
        if start >= b.len() {
            // A tag and nothing else: not playable audio.
            return false;
        }
    }
    // Two consecutive valid frame headers (or one that ends exactly at the end of the file).
    let Some(first) = mpeg_frame(&b[start..]) else {
        return false;
    };
    let next = start + first.len;
    next == b.len() || mpeg_frame(b.get(next..).unwrap_or_default()).is_some()
}

/// Whether the first element, after the XML declaration, comments, processing instructions and
/// a DOCTYPE, is `<svg`.
fn svg_root(b: &[u8]) -> bool {
    let mut rest = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    // Bounded: a prolog longer than this is not an SVG we take.
    for _ in 0..64 {
        rest = &rest[rest.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(rest.len())..];
        let skip = |end: &[u8], from: usize, rest: &[u8]| {
            rest.windows(end.len()).skip(from).position(|w| w == end).map(|i| i + from + end.len())
        };
        let next = if rest.starts_with(b"<?") {
            skip(b"?>", 2, rest)
        } else if rest.starts_with(b"<!--") {
            skip(b"-->", 4, rest)
        } else if rest.starts_with(b"<!DOCTYPE") {
            // Up to the '>' that closes it, past an internal subset in brackets.
            let close = rest.iter().position(|&c| c == b'[' || c == b'>');
            match close.map(|i| rest[i]) {
                Some(b'[') => {
                    skip(b"]", 0, rest).and_then(|i| rest[i..].iter().position(|&c| c == b'>').map(|j| i + j + 1))
                }
                Some(_) => close.map(|i| i + 1),
                None => None,
            }
        } else {
            return rest.starts_with(b"<svg")
                && rest.get(4).is_some_and(|c| c.is_ascii_whitespace() || *c == b'>' || *c == b'/');
        };
        match next {
            Some(i) => rest = &rest[i..],
            None => return false,
        }
    }
    false
}

fn looks_like_markup(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    b.iter().find(|c| !c.is_ascii_whitespace()).is_some_and(|&c| c == b'<')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signatures() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Sniffed::Image(ImageKind::Png));
        assert_eq!(sniff(b"GIF89a...."), Sniffed::Image(ImageKind::Gif));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Sniffed::Image(ImageKind::WebP));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Sniffed::Audio(AudioKind::Wav));
        assert_eq!(sniff(b"fLaC\x80\0\0\x22"), Sniffed::Audio(AudioKind::Flac));
        assert_eq!(sniff(b"FORM\0\0\0\x20AIFFCOMM"), Sniffed::Audio(AudioKind::Aiff));
        assert_eq!(sniff(b"FORM\0\0\0\x20AIFCFVER"), Sniffed::Audio(AudioKind::Aiff));
        assert_eq!(sniff(b"FORM\0\0\0\x208SVXVHDR"), Sniffed::Unsupported("unknown"));
        assert_eq!(sniff(b"  <svg onload=alert(1)>"), Sniffed::Svg);
        assert_eq!(
            sniff(b"<?xml version='1.0'?>\n<!-- c -->\n<!DOCTYPE svg [<!ATTLIST g a CDATA #IMPLIED>]>\n<svg/>"),
            Sniffed::Svg
        );
        assert_eq!(sniff(b"<html><svg/></html>"), Sniffed::Unsupported("markup"));
        assert_eq!(sniff(b"<svgfoo/>"), Sniffed::Unsupported("markup"));
        assert_eq!(sniff(b"\x7fELF\x02\x01"), Sniffed::Unsupported("executable"));
        assert_eq!(sniff(b"PK\x03\x04"), Sniffed::Unsupported("zip"));
        assert_eq!(sniff(b""), Sniffed::Unsupported("empty"));
        assert_eq!(sniff(b"BM"), Sniffed::Unsupported("unknown"));
    }

    #[test]
    fn mp3_needs_two_frames() {
        // MPEG-1 layer III, 128 kbps, 44.1 kHz: 417-byte frames.
        let mut frame = vec![0u8; 417];
        frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
        let two = [frame.clone(), frame.clone()].concat();
        assert_eq!(sniff(&two), Sniffed::Audio(AudioKind::Mp3));
        let mut broken = two.clone();
        broken[417] = 0;
        assert_eq!(sniff(&broken), Sniffed::Unsupported("unknown"));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = sniff(&data);
        }
    }
}
