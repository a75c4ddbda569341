//! How long an audio file plays, read from its container without decoding it.
//!
//! Each reader trusts a header only as far as the bytes that are there: a length that points past
//! the end of the file is a truncated (corrupt) file, not a long one, and every loop advances by
//! at least a header's length, so the work is bounded by the file's size (itself bounded by
//! `Limits::max_audio_bytes`) whatever the headers claim.

use crate::sniff::{mpeg_frame, AudioKind};

/// Why a duration could not be read: the file is not what its magic bytes promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt audio: {0}")]
pub struct Corrupt(pub &'static str);

/// The playing time in milliseconds.
pub fn duration_ms(kind: AudioKind, b: &[u8]) -> Result<u64, Corrupt> {
    match kind {
        AudioKind::Mp3 => mp3(b),
        AudioKind::Ogg => ogg(b),
        AudioKind::Wav => wav(b),
        AudioKind::Aiff => aiff(b),
        AudioKind::Flac => flac(b),
        AudioKind::M4a => m4a(b),
    }
}

fn ms(units: u64, per_second: u64) -> Result<u64, Corrupt> {
    if per_second == 0 {
        return Err(Corrupt("rate of zero"));
    }
    Ok((u128::from(units) * 1000 / u128::from(per_second)).try_into().unwrap_or(u64::MAX))
}

fn u16_le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
pub(super) fn u32_be(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
pub(super) fn u64_be(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Skip an ID3v2 tag, if the file starts with one.
pub(super) fn after_id3(b: &[u8]) -> usize {
    if b.len() >= 10 && b.starts_with(b"ID3") {
        let size = b[6..10].iter().fold(0usize, |acc, &x| (acc << 7) | (x & 0x7F) as usize);
        let footer = if b[5] & 0x10 != 0 { 10 } else { 0 };
        return 10 + size + footer;
    }
    0
}

/// MPEG audio: the frame count of a Xing/Info or VBRI header when the first frame has one and it
/// is plausible for the file's size, otherwise the frames themselves, counted.
fn mp3(b: &[u8]) -> Result<u64, Corrupt> {
    let start = after_id3(b);
    let first = b.get(start..).and_then(mpeg_frame).ok_or(Corrupt("no MPEG frame"))?;
    if let Some(frames) = vbr_frames(&b[start..], &first) {
        // The smallest frame is 24 bytes: a count the file cannot hold is a lie, so count instead.
        if frames > 0 && u64::from(frames) <= (b.len() as u64) / 24 {
            return ms(u64::from(frames) * u64::from(first.samples), u64::from(first.rate));
        }
    }
    let (mut at, mut samples) = (start, 0u64);
    while let Some(f) = b.get(at..).and_then(mpeg_frame) {
        // Only whole frames play; a last frame cut short is where a truncated file ends.
        if at + f.len > b.len() {
            break;
        }
        samples += u64::from(f.samples);
        at += f.len;
    }
    ms(samples, u64::from(first.rate))
}

fn vbr_frames(b: &[u8], f: &crate::sniff::MpegFrame) -> Option<u32> {
    // Xing/Info sits after the side information, whose size depends on version and channels.
    let side = match (f.mpeg1, f.mono) {
        (true, false) => 32,
        (true, true) => 17,
        (false, false) => 17,
        (false, true) => 9,
    };
    let x = 4 + side;
    if matches!(b.get(x..x + 4), Some(b"Xing" | b"Info")) {
        let flags = u32_be(b, x + 4)?;
        return if flags & 1 != 0 { u32_be(b, x + 8) } else { None };
    }
    if b.get(36..40) == Some(b"VBRI") {
        return u32_be(b, 36 + 14);
    }
    None
}

/// Ogg: the last complete page's granule position of the first stream, at the rate its
/// identification header gives (Opus: always 48 kHz, less the pre-skip).
fn ogg(b: &[u8]) -> Result<u64, Corrupt> {
    let first = ogg_page(b, 0).ok_or(Corrupt("no Ogg page"))?;
    let packet = &b[first.body..first.end];
    let (rate, skip) = if packet.starts_with(b"\x01vorbis") {
        (u64::from(u32_le(packet, 12).ok_or(Corrupt("short Vorbis header"))?), 0)
    } else if packet.starts_with(b"OpusHead") {
        (48_000, u64::from(u16_le(packet, 10).ok_or(Corrupt("short Opus header"))?))
    } else if packet.starts_with(b"\x7fFLAC") && packet.get(9..13) == Some(b"fLaC") {
        let info = streaminfo(packet.get(17..).ok_or(Corrupt("short FLAC header"))?)?;
        (info.rate, 0)
    } else {
        return Err(Corrupt("unknown Ogg codec"));
    };
    // Pages are at most 65,307 bytes: the last complete one starts within that of the end. Each
    // candidate is checked as a page, so a stray "OggS" in the data is not taken for one.
    let from = b.len().saturating_sub(2 * 65_307);
    let mut at = b.len().saturating_sub(27);
    loop {
        if &b[at..at + 4] == b"OggS" {
            if let Some(p) = ogg_page(b, at) {
                if p.serial == first.serial && p.granule != u64::MAX {
                    return ms(p.granule.saturating_sub(skip), rate);
                }
            }
        }
        if at <= from.max(first.end) {
            return Err(Corrupt("no complete last Ogg page"));
        }
        at -= 1;
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct OggPage {
    pub start: usize,
    flags: u8,
    pub granule: u64,
    pub serial: u32,
    pub body: usize,
    pub end: usize,
}

impl OggPage {
    /// The first page of its stream (BOS).
    pub fn first_page(&self) -> bool {
        self.flags & 2 != 0
    }
}

/// The page at `at`, if its header and body are all there.
pub(super) fn ogg_page(b: &[u8], at: usize) -> Option<OggPage> {
    let h = b.get(at..at + 27)?;
    if &h[..4] != b"OggS" || h[4] != 0 {
        return None;
    }
    let granule = u64::from_le_bytes(h[6..14].try_into().ok()?);
    let serial = u32::from_le_bytes(h[14..18].try_into().ok()?);
    let segments = usize::from(h[26]);
    let table = b.get(at + 27..at + 27 + segments)?;
    let body = at + 27 + segments;
    let end = body + table.iter().map(|&x| usize::from(x)).sum::<usize>();
    (end <= b.len()).then_some(OggPage { start: at, flags: h[5], granule, serial, body, end })
}

/// WAV: the data chunk's length at the format's byte rate (or the `fact` chunk's sample count,
/// which compressed formats carry).
fn wav(b: &[u8]) -> Result<u64, Corrupt> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err(Corrupt("not RIFF/WAVE"));
    }
    let (mut at, mut fmt, mut fact) = (12usize, None, None);
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let size = u32_le(b, at + 4).ok_or(Corrupt("short chunk"))?;
        let body = at + 8;
        match id {
            b"fmt " => {
                let rate = u32_le(b, body + 4).ok_or(Corrupt("short fmt chunk"))?;
                let byte_rate = u32_le(b, body + 8).ok_or(Corrupt("short fmt chunk"))?;
                fmt = Some((u64::from(rate), u64::from(byte_rate)));
            }
            b"fact" => fact = u32_le(b, body),
            b"data" => {
                let (rate, byte_rate) = fmt.ok_or(Corrupt("data before fmt"))?;
                let left = (b.len() - body) as u64;
                // Streaming writers leave the size unset (0 or all ones): the data runs to the end.
                let len = match size {
                    0 | u32::MAX => left,
                    n if u64::from(n) <= left => u64::from(n),
                    _ => return Err(Corrupt("data chunk longer than the file")),
                };
                return match fact {
                    Some(samples) if samples > 0 => ms(u64::from(samples), rate),
                    _ => ms(len, byte_rate),
                };
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body.checked_add(size as usize + (size as usize & 1)).ok_or(Corrupt("chunk size"))?;
    }
    Err(Corrupt("no data chunk"))
}

/// AIFF and AIFF-C: the `COMM` chunk's frame count at its sample rate (an 80-bit float), checked
/// against the sound data that is there when the samples are uncompressed.
fn aiff(b: &[u8]) -> Result<u64, Corrupt> {
    if b.len() < 12 || &b[..4] != b"FORM" || !matches!(&b[8..12], b"AIFF" | b"AIFC") {
        return Err(Corrupt("not FORM/AIFF"));
    }
    let (mut at, mut comm, mut sound) = (12usize, None, None);
    while at + 8 <= b.len() {
        let size = u32_be(b, at + 4).ok_or(Corrupt("short chunk"))? as usize;
        let body = at + 8;
        let chunk = b.get(body..body.saturating_add(size)).ok_or(Corrupt("chunk longer than the file"))?;
        match &b[at..at + 4] {
            b"COMM" => comm = Some(chunk),
            b"SSND" => sound = Some(chunk.len().saturating_sub(8) as u64), // after offset and block size
            _ => {}
        }
        at = body.checked_add(size + (size & 1)).ok_or(Corrupt("chunk size"))?;
    }
    let comm = comm.ok_or(Corrupt("no COMM chunk"))?;
    let (channels, frames, bits) = match (comm.get(..2), u32_be(comm, 2), comm.get(6..8)) {
        (Some(c), Some(f), Some(s)) => (u16::from_be_bytes([c[0], c[1]]), f, u16::from_be_bytes([s[0], s[1]])),
        _ => return Err(Corrupt("short COMM chunk")),
    };
    let rate = comm.get(8..18).and_then(extended_to_u64).ok_or(Corrupt("sample rate"))?;
    if frames > 0 {
        // AIFF-C's compressed types hold fewer bytes than frames × channels × sample size.
        let uncompressed = &b[8..12] == b"AIFF" || matches!(comm.get(18..22), Some(b"NONE" | b"sowt" | b"twos"));
        let need = u64::from(frames) * u64::from(channels) * u64::from(bits).div_ceil(8);
        if uncompressed && need > sound.ok_or(Corrupt("no SSND chunk"))? {
            return Err(Corrupt("fewer samples than COMM says"));
        }
    }
    ms(u64::from(frames), rate)
}

/// An IEEE 754 80-bit extended float (AIFF's sample rate) as a whole number, if it is one from
/// 1 to 2^32: the exponent's bias is 16383 and the 64-bit mantissa has an explicit leading one.
fn extended_to_u64(x: &[u8]) -> Option<u64> {
    let exponent = i32::from(u16::from_be_bytes([x[0], x[1]]) & 0x7FFF) - 16383;
    let mantissa = u64_be(x, 2)?;
    if x[0] & 0x80 != 0 || !(0..32).contains(&exponent) {
        return None;
    }
    Some(mantissa >> (63 - exponent))
}

/// The channel count a WAV's `fmt ` or an AIFF's `COMM` chunk gives (FLAC's is 1 to 8 by
/// construction), read before a decoder sees the file: decoders multiply it by other fields.
pub(crate) fn channel_count(kind: AudioKind, b: &[u8]) -> Option<u16> {
    let (id, little_endian) = match kind {
        AudioKind::Wav => (b"fmt ", true),
        AudioKind::Aiff => (b"COMM", false),
        AudioKind::Flac => return b.get(20).map(|x| u16::from((x >> 1) & 7) + 1),
        _ => return None,
    };
    let mut at = 12usize;
    while at + 8 <= b.len() {
        let size = if little_endian { u32_le(b, at + 4)? } else { u32_be(b, at + 4)? } as usize;
        if &b[at..at + 4] == id {
            let offset = if little_endian { at + 10 } else { at + 8 };
            let c = b.get(offset..offset + 2)?;
            return Some(if little_endian {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            });
        }
        at = at.checked_add(8 + size + (size & 1))?;
    }
    None
}

struct StreamInfo {
    rate: u64,
    samples: u64,
}

/// FLAC's STREAMINFO block body (34 bytes).
fn streaminfo(s: &[u8]) -> Result<StreamInfo, Corrupt> {
    let s = s.get(..18).ok_or(Corrupt("short STREAMINFO"))?;
    let rate = (u64::from(s[10]) << 12) | (u64::from(s[11]) << 4) | (u64::from(s[12]) >> 4);
    let samples = (u64::from(s[13] & 0x0F) << 32) | u64::from(u32::from_be_bytes([s[14], s[15], s[16], s[17]]));
    Ok(StreamInfo { rate, samples })
}

/// FLAC: STREAMINFO's total sample count at its sample rate. A stream that does not say how many
/// samples it holds (a live recording's) cannot be measured without decoding it all.
fn flac(b: &[u8]) -> Result<u64, Corrupt> {
    if !b.starts_with(b"fLaC") || b.get(4).map(|t| t & 0x7F) != Some(0) {
        return Err(Corrupt("no STREAMINFO"));
    }
    let info = streaminfo(b.get(8..).unwrap_or_default())?;
    if info.samples == 0 {
        return Err(Corrupt("FLAC without a sample count"));
    }
    ms(info.samples, info.rate)
}

/// MP4 audio: the movie header's (`moov/mvhd`) duration at its timescale. At most a few thousand
/// boxes are walked, each inside its parent.
fn m4a(b: &[u8]) -> Result<u64, Corrupt> {
    let moov = child(b, b"moov").ok_or(Corrupt("no moov box"))?;
    let mvhd = child(moov, b"mvhd").ok_or(Corrupt("no mvhd box"))?;
    let (scale, duration) = match mvhd.first() {
        Some(0) => (u32_be(mvhd, 12), u32_be(mvhd, 16).filter(|&d| d != u32::MAX).map(u64::from)),
        Some(1) => (u32_be(mvhd, 20), u64_be(mvhd, 24).filter(|&d| d != u64::MAX)),
        _ => return Err(Corrupt("unknown mvhd version")),
    };
    let scale = scale.ok_or(Corrupt("short mvhd"))?;
    ms(duration.ok_or(Corrupt("mvhd without a duration"))?, u64::from(scale))
}

/// The body of the first box named `name` among the boxes that make up `b`.
fn child<'a>(b: &'a [u8], name: &[u8; 4]) -> Option<&'a [u8]> {
    let mut at = 0usize;
    for _ in 0..4096 {
        let size = u32_be(b, at)? as usize;
        let kind = b.get(at + 4..at + 8)?;
        let (header, len) = match size {
            0 => (8, b.len() - at),
            1 => (16, usize::try_from(u64_be(b, at + 8)?).ok()?),
            n => (8, n),
        };
        if len < header || at.checked_add(len)? > b.len() {
            return None;
        }
        if kind == name {
            return Some(&b[at + header..at + len]);
        }
        at += len;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn riff(chunks: &[(&[u8; 4], Vec<u8>)], declared: Option<u32>) -> Vec<u8> {
        let mut body = b"WAVE".to_vec();
        for (id, data) in chunks {
            body.extend_from_slice(*id);
            let n = if *id == b"data" { declared.unwrap_or(data.len() as u32) } else { data.len() as u32 };
            body.extend_from_slice(&n.to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    pub(crate) fn fmt_pcm(rate: u32, channels: u16, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut f = Vec::new();
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&channels.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        f.extend_from_slice(&align.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f
    }

    #[test]
    fn wav_duration_is_the_data_at_the_byte_rate() {
        // 1.5 s of 16-bit mono at 8 kHz, with an odd-sized chunk before the data.
        let w = riff(&[(b"fmt ", fmt_pcm(8000, 1, 16)), (b"LIST", vec![1, 2, 3]), (b"data", vec![0; 24_000])], None);
        assert_eq!(duration_ms(AudioKind::Wav, &w), Ok(1500));
        // A streaming writer's unset size runs to the end.
        let s = riff(&[(b"fmt ", fmt_pcm(8000, 1, 16)), (b"data", vec![0; 16_000])], Some(u32::MAX));
        assert_eq!(duration_ms(AudioKind::Wav, &s), Ok(1000));
    }

    #[test]
    fn a_wav_header_announcing_ten_hours_in_a_small_file_is_corrupt() {
        let ten_hours = 10 * 3600 * 16_000;
        let w = riff(&[(b"fmt ", fmt_pcm(8000, 1, 16)), (b"data", vec![0; 1000])], Some(ten_hours));
        assert_eq!(duration_ms(AudioKind::Wav, &w), Err(Corrupt("data chunk longer than the file")));
        let mut cut = riff(&[(b"fmt ", fmt_pcm(8000, 1, 16)), (b"data", vec![0; 1000])], None);
        cut.truncate(500);
        assert!(duration_ms(AudioKind::Wav, &cut).is_err());
        let no_rate = riff(&[(b"fmt ", fmt_pcm(0, 1, 16)), (b"data", vec![0; 10])], None);
        assert_eq!(duration_ms(AudioKind::Wav, &no_rate), Err(Corrupt("rate of zero")));
        // Chunk sizes near u32::MAX do not overflow or loop.
        let mut huge = b"RIFF\0\0\0\0WAVEjunk".to_vec();
        huge.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(duration_ms(AudioKind::Wav, &huge).is_err());
    }

    /// An AIFF of 16-bit samples; `frames` is what COMM says, `sound` the bytes of SSND.
    pub(crate) fn aiff_file(rate: u32, channels: u16, frames: u32, sound: usize) -> Vec<u8> {
        // 80-bit extended: exponent 16383 + the position of the rate's top bit, mantissa left-aligned.
        let top = 31 - rate.leading_zeros();
        let mut extended = ((16383 + top) as u16).to_be_bytes().to_vec();
        extended.extend_from_slice(&(u64::from(rate) << (63 - top)).to_be_bytes());
        let mut comm = channels.to_be_bytes().to_vec();
        comm.extend_from_slice(&frames.to_be_bytes());
        comm.extend_from_slice(&16u16.to_be_bytes());
        comm.extend(extended);
        let mut body = b"AIFF".to_vec();
        for (id, data) in [(b"COMM", comm), (b"SSND", [vec![0; 8], vec![0; sound]].concat())] {
            body.extend_from_slice(id);
            body.extend_from_slice(&(data.len() as u32).to_be_bytes());
            body.extend(data);
        }
        [b"FORM".to_vec(), (body.len() as u32).to_be_bytes().to_vec(), body].concat()
    }

    #[test]
    fn aiff_duration_is_comm_s_frames_at_its_rate_and_checked_against_the_sound() {
        assert_eq!(duration_ms(AudioKind::Aiff, &aiff_file(44_100, 2, 22_050, 22_050 * 4)), Ok(500));
        assert_eq!(duration_ms(AudioKind::Aiff, &aiff_file(8_000, 1, 8_000, 16_000)), Ok(1000));
        // Ten hours announced in a few bytes of sound.
        let lying = aiff_file(8_000, 1, 10 * 3600 * 8000, 100);
        assert_eq!(duration_ms(AudioKind::Aiff, &lying), Err(Corrupt("fewer samples than COMM says")));
        let mut cut = aiff_file(8_000, 1, 8_000, 16_000);
        cut.truncate(100);
        assert_eq!(duration_ms(AudioKind::Aiff, &cut), Err(Corrupt("chunk longer than the file")));
        let mut no_rate = aiff_file(8_000, 1, 8_000, 16_000);
        no_rate[28..38].fill(0); // COMM's rate: header 12, chunk header 8, channels/frames/bits 8
        assert_eq!(duration_ms(AudioKind::Aiff, &no_rate), Err(Corrupt("sample rate")));
    }

    /// One MPEG-1 Layer III frame header at 128 kbps, 44.1 kHz, stereo: 417 bytes, 1152 samples.
    fn mp3_frame() -> Vec<u8> {
        let mut f = vec![0xFF, 0xFB, 0x90, 0x00];
        f.resize(417, 0);
        f
    }

    #[test]
    fn mp3_frames_are_counted_and_a_xing_count_is_used_when_plausible() {
        let frames: Vec<u8> = (0..100).flat_map(|_| mp3_frame()).collect();
        // 100 × 1152 / 44100 s
        assert_eq!(duration_ms(AudioKind::Mp3, &frames), Ok(2612));
        let mut tagged = b"ID3\x03\0\0\0\0\0\x0A".to_vec();
        tagged.extend_from_slice(&[0; 10]);
        tagged.extend_from_slice(&frames);
        tagged.extend_from_slice(&[0xFF, 0xFB, 0x90]); // a frame cut short at the end
        assert_eq!(duration_ms(AudioKind::Mp3, &tagged), Ok(2612));

        let mut xing = mp3_frame();
        xing[36..40].copy_from_slice(b"Xing");
        xing[40..44].copy_from_slice(&1u32.to_be_bytes());
        xing[44..48].copy_from_slice(&50u32.to_be_bytes());
        let mut vbr = xing.clone();
        vbr.extend((0..50).flat_map(|_| mp3_frame()));
        assert_eq!(duration_ms(AudioKind::Mp3, &vbr), Ok(1306));
        // A Xing header claiming ten hours in a few frames' bytes: counted instead.
        xing[44..48].copy_from_slice(&(10 * 3600 * 39u32).to_be_bytes());
        let mut lie = xing.clone();
        lie.extend((0..50).flat_map(|_| mp3_frame()));
        assert_eq!(duration_ms(AudioKind::Mp3, &lie), Ok(1332));
        assert!(duration_ms(AudioKind::Mp3, b"ID3\x03\0\0\0\0\0\x0A").is_err());
    }

    fn ogg_page_bytes(serial: u32, granule: u64, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS\0\0".to_vec();
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&serial.to_le_bytes());
        p.extend_from_slice(&[0; 8]); // sequence and CRC (not checked here)
        let mut table = vec![255u8; body.len() / 255];
        table.push((body.len() % 255) as u8);
        p.push(table.len() as u8);
        p.extend(table);
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn ogg_duration_is_the_last_granule_at_the_codec_rate() {
        let mut vorbis_id = b"\x01vorbis".to_vec();
        vorbis_id.extend_from_slice(&0u32.to_le_bytes());
        vorbis_id.push(1);
        vorbis_id.extend_from_slice(&22_050u32.to_le_bytes());
        vorbis_id.resize(30, 0);
        let mut f = ogg_page_bytes(7, 0, &vorbis_id);
        f.extend(ogg_page_bytes(7, 22_050, &[b'O'; 600])); // "OggS"-free filler
        f.extend(ogg_page_bytes(9, 1_000_000, &[1; 10])); // another stream's page
        f.extend(ogg_page_bytes(7, 66_150, &[2; 300]));
        f.extend(ogg_page_bytes(7, u64::MAX, &[3; 30])); // no packet ends on it
        assert_eq!(duration_ms(AudioKind::Ogg, &f), Ok(3000));
        // A last page cut short: the one before it counts.
        let mut cut = f.clone();
        cut.truncate(cut.len() - 40 - 20);
        assert_eq!(duration_ms(AudioKind::Ogg, &cut), Ok(1000));

        let mut opus = b"OpusHead\x01\x02".to_vec();
        opus.extend_from_slice(&312u16.to_le_bytes());
        opus.extend_from_slice(&48_000u32.to_le_bytes());
        opus.extend_from_slice(&[0, 0, 0]);
        let mut o = ogg_page_bytes(1, 0, &opus);
        o.extend(ogg_page_bytes(1, 96_312, &[5; 100]));
        assert_eq!(duration_ms(AudioKind::Ogg, &o), Ok(2000));
        assert!(duration_ms(AudioKind::Ogg, &ogg_page_bytes(1, 0, &opus)[..20]).is_err());
    }

    fn streaminfo_bytes(rate: u32, samples: u64) -> Vec<u8> {
        let mut s = vec![0u8; 34];
        s[10] = (rate >> 12) as u8;
        s[11] = (rate >> 4) as u8;
        s[12] = ((rate & 0xF) << 4) as u8;
        s[13] = ((samples >> 32) & 0xF) as u8;
        s[14..18].copy_from_slice(&(samples as u32).to_be_bytes());
        s
    }

    #[test]
    fn flac_duration_is_streaminfo_samples_at_its_rate() {
        let mut f = b"fLaC\x80\0\0\x22".to_vec();
        f.extend(streaminfo_bytes(44_100, 441_000));
        assert_eq!(duration_ms(AudioKind::Flac, &f), Ok(10_000));
        let mut unknown = b"fLaC\x80\0\0\x22".to_vec();
        unknown.extend(streaminfo_bytes(44_100, 0));
        assert!(duration_ms(AudioKind::Flac, &unknown).is_err());
        // The most a header can claim: 2^36 samples at 1 Hz, computed without overflow.
        let mut most = b"fLaC\x80\0\0\x22".to_vec();
        most.extend(streaminfo_bytes(1, (1 << 36) - 1));
        assert_eq!(duration_ms(AudioKind::Flac, &most), Ok(((1u64 << 36) - 1) * 1000));
    }

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn m4a_duration_is_the_movie_header_at_its_timescale() {
        let mut mvhd = vec![0u8; 100];
        mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes());
        mvhd[16..20].copy_from_slice(&4_321u32.to_be_bytes());
        let mut file = mp4_box(b"ftyp", b"M4A \0\0\0\0");
        file.extend(mp4_box(b"free", &[0; 5]));
        file.extend(mp4_box(b"moov", &[mp4_box(b"trak", &[0; 9]), mp4_box(b"mvhd", &mvhd)].concat()));
        assert_eq!(duration_ms(AudioKind::M4a, &file), Ok(4321));
        // A box claiming more than its parent holds: refused, not read past the end.
        let mut liar = mp4_box(b"ftyp", b"M4A \0\0\0\0");
        liar.extend_from_slice(&u32::MAX.to_be_bytes());
        liar.extend_from_slice(b"moov");
        assert!(duration_ms(AudioKind::M4a, &liar).is_err());
        // Zero-sized boxes would loop forever if the walk did not advance.
        let zeros = [0u8; 64];
        assert!(duration_ms(AudioKind::M4a, &zeros).is_err());
    }

    #[test]
    fn any_bytes_give_a_duration_or_an_error_never_a_panic() {
        let mut seed = 1u64;
        for n in 0..2000 {
            let len = (n * 7) % 600;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            for kind in [AudioKind::Mp3, AudioKind::Ogg, AudioKind::Wav, AudioKind::Flac, AudioKind::M4a] {
                let mut b = match kind {
                    AudioKind::Wav => b"RIFF\0\0\0\0WAVE".to_vec(),
                    AudioKind::Ogg => b"OggS".to_vec(),
                    AudioKind::Flac => b"fLaC".to_vec(),
                    _ => Vec::new(),
                };
                b.extend_from_slice(&bytes);
                let _ = duration_ms(kind, &b);
            }
        }
    }
}
