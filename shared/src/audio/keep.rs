//! What stored audio keeps: its audio, and nothing else a file could carry beside it.
//!
//! Lossy audio is not re-encoded (that would only lose quality); its container is rewritten from
//! what plays, so a polyglot (HTML or a ZIP in a tag, in an extra stream, in an unknown box or
//! after the last frame) loses its payload while the decoded samples stay the same:
//!
//! - **MP3**: the MPEG frames, found one after another (junk between them is skipped by finding
//!   the next two frames in a row), and of the ID3v2 tag only a few short text frames (title,
//!   artist, album). No ID3v1 or APE tag, no attached picture, nothing after the last frame.
//! - **Ogg**: the pages of its audio streams (Vorbis, Opus, FLAC), byte for byte (their CRCs
//!   stay valid); pages of any other stream and bytes between pages are dropped.
//! - **M4A**: rebuilt as `ftyp`, `moov` and `mdat` from its audio tracks: the boxes playback needs,
//!   copied, the sample tables' chunk offsets written for the new layout, and the audio samples
//!   themselves; other tracks, metadata (`udta`, `meta`), `free` space and unknown boxes are
//!   dropped. A file without an audio track with samples is refused.

use super::duration::{after_id3, ogg_page, u32_be, u64_be, Corrupt};
use crate::sniff::{mpeg_frame, AudioKind};

/// `bytes` (of `kind`) reduced to their audio; WAV, AIFF and FLAC (stored as MP3 when smaller) are
/// rewritten as the chunks or blocks that describe and hold their samples.
pub fn keep_audio(kind: AudioKind, bytes: &[u8]) -> Result<Vec<u8>, Corrupt> {
    match kind {
        AudioKind::Mp3 => mp3(bytes),
        AudioKind::Ogg => ogg(bytes),
        AudioKind::M4a => m4a(bytes),
        AudioKind::Wav => riff_chunks(bytes, true, &[b"fmt ", b"fact", b"data"]),
        AudioKind::Aiff => riff_chunks(bytes, false, &[b"FVER", b"COMM", b"SSND"]),
        AudioKind::Flac => flac(bytes),
    }
}

// -- MP3 -------------------------------------------------------------------------------------------

/// ID3v2 frames kept: short text that says what the recording is.
const ID3_KEPT: &[&[u8; 4]] = &[b"TIT2", b"TPE1", b"TALB"];
const ID3_TEXT_MAX: usize = 256;

fn mp3(b: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let start = after_id3(b).min(b.len());
    let mut out = id3_text(&b[..start]);
    let mut at = start;
    let mut frames = 0usize;
    while at < b.len() {
        match mpeg_frame(&b[at..]) {
            Some(f)
                if at + f.len <= b.len()
                    && (at + f.len == b.len() || frames > 0 || next_frame_follows(b, at + f.len)) =>
            {
                out.extend_from_slice(&b[at..at + f.len]);
                frames += 1;
                at += f.len;
            }
            _ => match resync(b, at + 1) {
                Some(next) => at = next,
                None => break,
            },
        }
    }
    if frames == 0 {
        return Err(Corrupt("no MPEG frames"));
    }
    Ok(out)
}

fn next_frame_follows(b: &[u8], at: usize) -> bool {
    b.get(at..).and_then(mpeg_frame).is_some()
}

/// The next offset from `from` where two whole MPEG frames follow one another: junk between frames
/// is skipped, a stray sync pattern in it is not taken for audio.
fn resync(b: &[u8], from: usize) -> Option<usize> {
    (from..b.len().saturating_sub(4)).find(|&i| {
        b[i] == 0xFF
            && mpeg_frame(&b[i..]).is_some_and(|f| {
                let next = i + f.len;
                next <= b.len() && (next == b.len() || mpeg_frame(&b[next..]).is_some_and(|g| next + g.len <= b.len()))
            })
    })
}

/// A new ID3v2 tag (of the same version) holding only the kept text frames, or nothing.
fn id3_text(tag: &[u8]) -> Vec<u8> {
    let Some(h) = tag.get(..10) else { return Vec::new() };
    let (version, flags) = (h[3], h[5]);
    // Unsynchronised or extended-header tags are rare: not worth reading, their text is dropped.
    if !matches!(version, 3 | 4) || flags & 0xC0 != 0 {
        return Vec::new();
    }
    let body = &tag[10..];
    let mut kept = Vec::new();
    let mut at = 0usize;
    while at + 10 <= body.len() && body[at] != 0 {
        let raw = [body[at + 4], body[at + 5], body[at + 6], body[at + 7]];
        let size = if version == 4 { syncsafe(raw) } else { u32::from_be_bytes(raw) as usize };
        let Some(end) = (at + 10).checked_add(size).filter(|&e| e <= body.len()) else { break };
        let id = &body[at..at + 4];
        let frame_flags = [body[at + 8], body[at + 9]];
        // Plain frames only: compressed, encrypted or grouped ones could hold anything.
        if ID3_KEPT.iter().any(|k| k.as_slice() == id) && size <= ID3_TEXT_MAX && frame_flags[1] == 0 {
            kept.extend_from_slice(&body[at..end]);
        }
        at = end;
    }
    if kept.is_empty() {
        return Vec::new();
    }
    let mut out = vec![b'I', b'D', b'3', version, 0, 0];
    out.extend_from_slice(&to_syncsafe(kept.len()));
    out.extend(kept);
    out
}

fn syncsafe(b: [u8; 4]) -> usize {
    b.iter().fold(0usize, |acc, &x| (acc << 7) | (x & 0x7F) as usize)
}

fn to_syncsafe(n: usize) -> [u8; 4] {
    [(n >> 21) as u8 & 0x7F, (n >> 14) as u8 & 0x7F, (n >> 7) as u8 & 0x7F, n as u8 & 0x7F]
}

// -- Ogg -------------------------------------------------------------------------------------------

fn ogg(b: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let mut pages = Vec::new();
    let mut at = 0usize;
    while at + 27 <= b.len() {
        match ogg_page(b, at) {
            Some(p) => {
                pages.push(p);
                at = p.end;
            }
            // Bytes between pages: look for the next page.
            None => match (at + 1..b.len().saturating_sub(26)).find(|&i| ogg_page(b, i).is_some()) {
                Some(next) => at = next,
                None => break,
            },
        }
    }
    // A stream is audio if its first page's first packet is a codec we play.
    let audio: Vec<u32> = pages
        .iter()
        .filter(|p| p.first_page())
        .filter(|p| {
            let packet = &b[p.body..p.end];
            packet.starts_with(b"\x01vorbis") || packet.starts_with(b"OpusHead") || packet.starts_with(b"\x7fFLAC")
        })
        .map(|p| p.serial)
        .collect();
    let mut out = Vec::with_capacity(b.len());
    for p in pages.iter().filter(|p| audio.contains(&p.serial)) {
        out.extend_from_slice(&b[p.start..p.end]);
    }
    if out.is_empty() {
        return Err(Corrupt("no Ogg audio stream"));
    }
    Ok(out)
}

// -- WAV, AIFF, FLAC --------------------------------------------------------------------------------

/// A RIFF/WAVE (little-endian sizes) or FORM/AIFF (big-endian) file rebuilt from the chunks in
/// `keep`, in their order in the file.
fn riff_chunks(b: &[u8], little_endian: bool, keep: &[&[u8; 4]]) -> Result<Vec<u8>, Corrupt> {
    let read = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if little_endian { u32::from_le_bytes(raw) } else { u32::from_be_bytes(raw) } as usize)
    };
    let mut body = b.get(8..12).ok_or(Corrupt("short header"))?.to_vec();
    let mut at = 12usize;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let size = match read(at + 4).ok_or(Corrupt("short chunk"))? {
            // A streaming writer's data chunk runs to the end without a size.
            0 | 0xFFFF_FFFF if id == b"data" => b.len() - at - 8,
            n => n,
        };
        let end = (at + 8).checked_add(size).filter(|&e| e <= b.len()).unwrap_or(b.len());
        if keep.iter().any(|k| k.as_slice() == id) {
            body.extend_from_slice(id);
            let len = (end - at - 8) as u32;
            body.extend_from_slice(&if little_endian { len.to_le_bytes() } else { len.to_be_bytes() });
            body.extend_from_slice(&b[at + 8..end]);
            if len % 2 == 1 {
                body.push(0);
            }
        }
        at = end + (end - at) % 2;
    }
    let len = body.len() as u32;
    let mut out = b.get(..4).ok_or(Corrupt("short header"))?.to_vec();
    out.extend_from_slice(&if little_endian { len.to_le_bytes() } else { len.to_be_bytes() });
    out.extend(body);
    Ok(out)
}

/// FLAC: the stream header, STREAMINFO and SEEKTABLE blocks, then the frames. (Pictures,
/// application data, comments, cue sheets and padding are dropped.)
fn flac(b: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let mut blocks = Vec::new();
    let mut at = 4usize;
    loop {
        let h = b.get(at..at + 4).ok_or(Corrupt("short metadata block"))?;
        let (last, kind) = (h[0] & 0x80 != 0, h[0] & 0x7F);
        let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let end = (at + 4).checked_add(size).filter(|&e| e <= b.len()).ok_or(Corrupt("metadata block"))?;
        if matches!(kind, 0 | 3) {
            blocks.push((kind, &b[at + 4..end]));
        }
        at = end;
        if last {
            break;
        }
    }
    if blocks.first().map(|b| b.0) != Some(0) {
        return Err(Corrupt("no STREAMINFO"));
    }
    let mut out = b"fLaC".to_vec();
    let n = blocks.len();
    for (i, (kind, data)) in blocks.into_iter().enumerate() {
        out.push(kind | if i + 1 == n { 0x80 } else { 0 });
        out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&b[at..]);
    Ok(out)
}

// -- M4A -------------------------------------------------------------------------------------------

/// One box: its type, where it starts and ends, and where its content starts.
#[derive(Clone, Copy)]
struct BoxAt<'a> {
    kind: &'a [u8],
    start: usize,
    body: usize,
    end: usize,
}

/// The boxes that make up `b[from..to]`; at most 4096.
fn boxes(b: &[u8], from: usize, to: usize) -> Result<Vec<BoxAt<'_>>, Corrupt> {
    boxes_until(b, from, to, false)
}

/// The boxes that make up `b[from..to]`; with `trailing`, bytes after the last whole box (what a
/// polyglot appends to the file) end the list instead of failing it.
fn boxes_until(b: &[u8], from: usize, to: usize, trailing: bool) -> Result<Vec<BoxAt<'_>>, Corrupt> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        if trailing && single_box(b, at, to).is_err() {
            break;
        }
        if out.len() >= 4096 {
            return Err(Corrupt("too many boxes"));
        }
        let size = u32_be(b, at).ok_or(Corrupt("short box"))? as usize;
        let kind = b.get(at + 4..at + 8).ok_or(Corrupt("short box"))?;
        let (header, len) = match size {
            0 => (8, to - at),
            1 => {
                (16, usize::try_from(u64_be(b, at + 8).ok_or(Corrupt("short box"))?).map_err(|_| Corrupt("box size"))?)
            }
            n => (8, n),
        };
        let end = at.checked_add(len).filter(|&e| len >= header && e <= to).ok_or(Corrupt("box size"))?;
        out.push(BoxAt { kind, start: at, body: at + header, end });
        at = end;
    }
    Ok(out)
}

/// The box at `at`, if it is whole within `to` and its type is four printable characters.
fn single_box(b: &[u8], at: usize, to: usize) -> Result<(), Corrupt> {
    let kind = b.get(at + 4..at + 8).ok_or(Corrupt("short box"))?;
    if !kind.iter().all(|c| c.is_ascii_alphanumeric() || *c == b' ') {
        return Err(Corrupt("box type"));
    }
    let size = u32_be(b, at).ok_or(Corrupt("short box"))? as usize;
    let len = match size {
        0 => to - at,
        1 => usize::try_from(u64_be(b, at + 8).ok_or(Corrupt("short box"))?).map_err(|_| Corrupt("box size"))?,
        n => n,
    };
    at.checked_add(len).filter(|&e| len >= 8 && e <= to).map(drop).ok_or(Corrupt("box size"))
}

fn find<'a>(list: &[BoxAt<'a>], kind: &[u8; 4]) -> Option<BoxAt<'a>> {
    list.iter().copied().find(|x| x.kind == kind)
}

/// A container box holding `children`, or a leaf box holding `content`.
fn write_box(out: &mut Vec<u8>, kind: &[u8], content: &[u8]) {
    out.extend_from_slice(&((content.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(content);
}

/// One kept audio track: its `trak` rebuilt but for the chunk offsets, and its chunks.
struct Track {
    /// The `trak` box with a placeholder `stco` whose entries start at `offsets_at`.
    trak: Vec<u8>,
    offsets_at: usize,
    /// (offset, length) of each chunk in the input.
    chunks: Vec<(usize, usize)>,
}

fn m4a(b: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let top = boxes_until(b, 0, b.len(), true)?;
    let ftyp = find(&top, b"ftyp").ok_or(Corrupt("no ftyp"))?;
    let moov = find(&top, b"moov").ok_or(Corrupt("no moov"))?;
    let mdats: Vec<(usize, usize)> = top.iter().filter(|x| x.kind == b"mdat").map(|x| (x.body, x.end)).collect();
    let children = boxes(b, moov.body, moov.end)?;
    if find(&children, b"mvex").is_some() {
        return Err(Corrupt("fragmented MP4"));
    }
    let mvhd = find(&children, b"mvhd").ok_or(Corrupt("no mvhd"))?;
    let mut tracks = Vec::new();
    for trak in children.iter().filter(|x| x.kind == b"trak") {
        if let Some(t) = audio_track(b, *trak, &mdats)? {
            tracks.push(t);
        }
    }
    if tracks.iter().all(|t| t.chunks.is_empty()) {
        return Err(Corrupt("no audio track with samples"));
    }

    let mut out = Vec::with_capacity(b.len());
    write_box(&mut out, b"ftyp", &ftyp_content(&b[ftyp.body..ftyp.end])?);
    let mut moov_content = b[mvhd.start..mvhd.end].to_vec();
    let mut placeholders = Vec::new();
    for t in &tracks {
        placeholders.push(moov_content.len() + 8 + t.offsets_at);
        moov_content.extend_from_slice(&t.trak);
    }
    let moov_at = out.len();
    write_box(&mut out, b"moov", &moov_content);
    let data_len: usize = tracks.iter().flat_map(|t| &t.chunks).map(|c| c.1).sum();
    out.extend_from_slice(&((data_len + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for (t, offsets) in tracks.iter().zip(placeholders) {
        for (i, &(from, len)) in t.chunks.iter().enumerate() {
            let offset = u32::try_from(out.len()).map_err(|_| Corrupt("file too large"))?;
            let slot = moov_at + offsets + 4 * i;
            out[slot..slot + 4].copy_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&b[from..from + len]);
        }
    }
    Ok(out)
}

/// `ftyp` with its brands, each a printable four-character code.
fn ftyp_content(f: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let brand = |x: &[u8]| x.len() == 4 && x.iter().all(|c| c.is_ascii_graphic() || *c == b' ');
    let major = f.get(..4).filter(|x| brand(x)).ok_or(Corrupt("ftyp"))?;
    let mut out = major.to_vec();
    out.extend_from_slice(f.get(4..8).ok_or(Corrupt("ftyp"))?);
    for c in f[8..].chunks(4).filter(|c| brand(c)).take(16) {
        out.extend_from_slice(c);
    }
    Ok(out)
}

/// Boxes of a kept track, by the container they are in; anything else is dropped.
const TRAK_KEEP: &[&[u8; 4]] = &[b"tkhd", b"edts", b"mdia"];
const MDIA_KEEP: &[&[u8; 4]] = &[b"mdhd", b"hdlr", b"minf"];
const MINF_KEEP: &[&[u8; 4]] = &[b"smhd", b"dinf", b"stbl"];
const STBL_KEEP: &[&[u8; 4]] = &[b"stsd", b"stts", b"ctts", b"stsc", b"stsz", b"stz2", b"stss", b"sgpd", b"sbgp"];

/// An audio (`soun`) track with its samples in the file's `mdat`s, rebuilt; None for another kind
/// of track.
fn audio_track(b: &[u8], trak: BoxAt, mdats: &[(usize, usize)]) -> Result<Option<Track>, Corrupt> {
    let kids = boxes(b, trak.body, trak.end)?;
    let mdia = find(&kids, b"mdia").ok_or(Corrupt("trak without mdia"))?;
    let mdia_kids = boxes(b, mdia.body, mdia.end)?;
    let hdlr = find(&mdia_kids, b"hdlr").ok_or(Corrupt("mdia without hdlr"))?;
    if b.get(hdlr.body + 8..hdlr.body + 12) != Some(b"soun") {
        return Ok(None);
    }
    let minf = find(&mdia_kids, b"minf").ok_or(Corrupt("no minf"))?;
    let minf_kids = boxes(b, minf.body, minf.end)?;
    let stbl = find(&minf_kids, b"stbl").ok_or(Corrupt("no stbl"))?;
    let stbl_kids = boxes(b, stbl.body, stbl.end)?;
    if let Some(dinf) = find(&minf_kids, b"dinf") {
        // Every data reference must be "in this file" (flag 1): no samples elsewhere.
        let dref = find(&boxes(b, dinf.body, dinf.end)?, b"dref").ok_or(Corrupt("no dref"))?;
        for entry in boxes(b, dref.body + 8, dref.end)? {
            if b.get(entry.body + 3).map(|f| f & 1) != Some(1) {
                return Err(Corrupt("samples in another file"));
            }
        }
    }
    let chunks = chunks(b, &stbl_kids)?;
    for &(from, len) in &chunks {
        if !mdats.iter().any(|&(s, e)| from >= s && from + len <= e) {
            return Err(Corrupt("a chunk outside the media data"));
        }
    }

    // The new stbl, with an stco of as many placeholder offsets.
    let mut stbl_content = Vec::new();
    for k in stbl_kids.iter().filter(|k| STBL_KEEP.iter().any(|x| x.as_slice() == k.kind)) {
        stbl_content.extend_from_slice(&b[k.start..k.end]);
    }
    // Entries start after the box header (8) and the version, flags and count (8).
    let stco_entries = stbl_content.len() + 16;
    let mut stco = vec![0u8; 8];
    stco[4..8].copy_from_slice(&(chunks.len() as u32).to_be_bytes());
    stco.resize(8 + 4 * chunks.len(), 0);
    write_box(&mut stbl_content, b"stco", &stco);
    let mut minf_content = Vec::new();
    let mut stco_in_minf = 0;
    for k in minf_kids.iter().filter(|k| MINF_KEEP.iter().any(|x| x.as_slice() == k.kind)) {
        if k.kind == b"stbl" {
            stco_in_minf = minf_content.len() + 8 + stco_entries;
            write_box(&mut minf_content, b"stbl", &stbl_content);
        } else {
            minf_content.extend_from_slice(&b[k.start..k.end]);
        }
    }
    let mut mdia_content = Vec::new();
    let mut stco_in_mdia = 0;
    for k in mdia_kids.iter().filter(|k| MDIA_KEEP.iter().any(|x| x.as_slice() == k.kind)) {
        if k.kind == b"minf" {
            stco_in_mdia = mdia_content.len() + 8 + stco_in_minf;
            write_box(&mut mdia_content, b"minf", &minf_content);
        } else {
            mdia_content.extend_from_slice(&b[k.start..k.end]);
        }
    }
    let mut trak_content = Vec::new();
    let mut offsets_at = 0;
    for k in kids.iter().filter(|k| TRAK_KEEP.iter().any(|x| x.as_slice() == k.kind)) {
        if k.kind == b"mdia" {
            offsets_at = trak_content.len() + 8 + stco_in_mdia;
            write_box(&mut trak_content, b"mdia", &mdia_content);
        } else {
            trak_content.extend_from_slice(&b[k.start..k.end]);
        }
    }
    let mut trak_box = Vec::new();
    write_box(&mut trak_box, b"trak", &trak_content);
    Ok(Some(Track { trak: trak_box, offsets_at: offsets_at + 8, chunks }))
}

/// Where each chunk of a track is, and how long, from its sample table (`stsc`, `stsz`/`stz2`,
/// `stco`/`co64`).
fn chunks(b: &[u8], stbl: &[BoxAt]) -> Result<Vec<(usize, usize)>, Corrupt> {
    let bad = || Corrupt("sample table");
    let offsets: Vec<usize> = if let Some(stco) = find(stbl, b"stco") {
        let n = u32_be(b, stco.body + 4).ok_or_else(bad)? as usize;
        (0..n)
            .map(|i| u32_be(b, stco.body + 8 + 4 * i).map(|x| x as usize).ok_or_else(bad))
            .collect::<Result<_, _>>()?
    } else if let Some(co64) = find(stbl, b"co64") {
        let n = u32_be(b, co64.body + 4).ok_or_else(bad)? as usize;
        (0..n)
            .map(|i| u64_be(b, co64.body + 8 + 8 * i).and_then(|x| usize::try_from(x).ok()).ok_or_else(bad))
            .collect::<Result<_, _>>()?
    } else {
        return Err(Corrupt("no chunk offsets"));
    };
    let sizes: Vec<usize> = if let Some(stsz) = find(stbl, b"stsz") {
        let (uniform, n) =
            (u32_be(b, stsz.body + 4).ok_or_else(bad)? as usize, u32_be(b, stsz.body + 8).ok_or_else(bad)? as usize);
        if n > b.len() {
            return Err(bad());
        }
        if uniform != 0 {
            vec![uniform; n]
        } else {
            (0..n)
                .map(|i| u32_be(b, stsz.body + 12 + 4 * i).map(|x| x as usize).ok_or_else(bad))
                .collect::<Result<_, _>>()?
        }
    } else {
        return Err(Corrupt("no sample sizes"));
    };
    let stsc = find(stbl, b"stsc").ok_or(Corrupt("no sample-to-chunk table"))?;
    let runs = u32_be(b, stsc.body + 4).ok_or_else(bad)? as usize;
    let mut per_chunk = vec![0usize; offsets.len()];
    for r in 0..runs {
        let at = stsc.body + 8 + 12 * r;
        let first = u32_be(b, at).ok_or_else(bad)? as usize;
        let count = u32_be(b, at + 4).ok_or_else(bad)? as usize;
        let next = if r + 1 < runs { u32_be(b, at + 12).ok_or_else(bad)? as usize } else { offsets.len() + 1 };
        if first == 0 || next < first {
            return Err(bad());
        }
        for c in first..next.min(offsets.len() + 1) {
            per_chunk[c - 1] = count;
        }
    }
    let mut sample = 0usize;
    let mut out = Vec::with_capacity(offsets.len());
    for (offset, count) in offsets.into_iter().zip(per_chunk) {
        let end = sample.checked_add(count).filter(|&e| e <= sizes.len()).ok_or_else(bad)?;
        let len: usize = sizes[sample..end].iter().sum();
        out.push((offset, len));
        sample = end;
    }
    if sample != sizes.len() {
        return Err(Corrupt("samples in no chunk"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sniff::{sniff, Sniffed};

    fn decode(bytes: &[u8], extension: &str) -> Vec<f32> {
        crate::audio::decode_samples(bytes, extension).unwrap()
    }

    const SCRIPT: &[u8] = b"<html><script>alert(document.cookie)</script></html>";
    const ZIP: &[u8] = b"PK\x03\x04\x14\0\0\0\x08\0evil.exe MZ\x90\0payload";

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn id3_frame(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        [id.as_slice(), &(body.len() as u32).to_be_bytes(), &[0, 0], body].concat()
    }

    fn id3v23(frames: &[Vec<u8>]) -> Vec<u8> {
        let body = frames.concat();
        [b"ID3\x03\0\0".as_slice(), &to_syncsafe(body.len()), &body].concat()
    }

    #[test]
    fn every_corpus_mp3_and_ogg_plays_the_same() {
        for (name, ext) in [
            ("real/tts-1-0.mp3", "mp3"),
            ("real/tts-1-1.mp3", "mp3"),
            ("real/bell.oga", "ogg"),
            ("real/camera-shutter.oga", "ogg"),
            ("real/complete.oga", "ogg"),
            ("real/dialog-warning.oga", "ogg"),
            ("real/message-new-instant.oga", "ogg"),
        ] {
            let original = crate::corpus_file(name);
            let kind = match sniff(&original) {
                Sniffed::Audio(k) => k,
                other => panic!("{name}: {other:?}"),
            };
            let kept = keep_audio(kind, &original).unwrap();
            assert!(kept.len() <= original.len(), "{name}");
            let (a, b) = (decode(&original, ext), decode(&kept, ext));
            assert!(!a.is_empty() && a == b, "{name} decodes differently ({} / {} samples)", a.len(), b.len());
        }
    }

    #[test]
    fn an_mp3_polyglot_loses_its_payload_and_plays_the_same() {
        let clean = crate::corpus_file("real/tts-1-0.mp3");
        let frames = &clean[after_id3(&clean)..];
        let tag = id3v23(&[
            id3_frame(b"TIT2", b"\0Bonjour"),
            id3_frame(b"TXXX", &[b"\0note\0".as_slice(), SCRIPT].concat()),
            id3_frame(b"APIC", &[b"\0text/html\0\x03\0".as_slice(), SCRIPT].concat()),
            id3_frame(b"PRIV", ZIP),
        ]);
        let v1 = [b"TAG".as_slice(), SCRIPT, &[0u8; 128][..128 - 3 - SCRIPT.len()]].concat();
        let hostile = [tag.as_slice(), frames, b"junk between", frames, &v1, ZIP, b"<script>after</script>"].concat();
        let kept = keep_audio(AudioKind::Mp3, &hostile).unwrap();
        for payload in [SCRIPT, ZIP, b"evil.exe".as_slice(), b"<script", b"junk between"] {
            assert!(!contains(&kept, payload), "{:?} survived", String::from_utf8_lossy(payload));
        }
        assert!(kept.starts_with(b"ID3") && contains(&kept, b"Bonjour"), "the title is kept");
        let expected = decode(&[frames, frames].concat(), "mp3");
        assert_eq!(decode(&kept, "mp3"), expected);
        // Nothing but a tag and junk: not audio.
        assert!(keep_audio(AudioKind::Mp3, &[tag.as_slice(), SCRIPT].concat()).is_err());
    }

    /// One Ogg page of `serial` carrying `body` (CRC left zero: the readers here do not check it).
    fn page(serial: u32, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS\0".to_vec();
        p.push(flags);
        p.extend_from_slice(&0u64.to_le_bytes());
        p.extend_from_slice(&serial.to_le_bytes());
        p.extend_from_slice(&[0; 8]);
        let segments: Vec<u8> = body.chunks(255).map(|c| c.len() as u8).collect();
        p.push(segments.len() as u8);
        p.extend(segments);
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn an_ogg_with_a_second_stream_and_a_trailing_zip_keeps_only_its_audio() {
        let clean = crate::corpus_file("real/bell.oga");
        let first = ogg_page(&clean, 0).unwrap();
        let hostile = [
            &clean[..first.end],
            &page(0xBAD, 2, SCRIPT),
            &clean[first.end..],
            &page(0xBAD, 4, ZIP),
            b"<script>trailing</script>",
            ZIP,
        ]
        .concat();
        let kept = keep_audio(AudioKind::Ogg, &hostile).unwrap();
        assert_eq!(kept, clean, "exactly the audio stream's pages");
        for payload in [SCRIPT, ZIP, b"<script".as_slice()] {
            assert!(!contains(&kept, payload));
        }
        // A file of nothing but a non-audio stream.
        assert!(keep_audio(AudioKind::Ogg, &page(1, 2, SCRIPT)).is_err());
    }

    fn mp4_box(kind: &[u8; 4], content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_box(&mut out, kind, content);
        out
    }

    #[test]
    fn an_m4a_without_audio_is_refused() {
        // The review's polyglot: ftyp and a movie header, then HTML and a ZIP.
        let mvhd = mp4_box(b"mvhd", &[0u8; 100]);
        let hostile =
            [mp4_box(b"ftyp", b"M4A \0\0\0\0M4A isom"), mp4_box(b"moov", &mvhd), SCRIPT.to_vec(), ZIP.to_vec()]
                .concat();
        assert!(keep_audio(AudioKind::M4a, &hostile).is_err());
    }

    #[test]
    fn an_m4a_keeps_its_audio_track_and_nothing_else() {
        // A second of AAC made by ffmpeg (`tests/fixtures/README.md`), its moov after its mdat.
        let clean = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tone.m4a")).unwrap();
        let top = boxes(&clean, 0, clean.len()).unwrap();
        let (moov, mdat) = (find(&top, b"moov").unwrap(), find(&top, b"mdat").unwrap());
        assert!(mdat.start < moov.start && moov.end == clean.len());
        // Payloads where a polyglot puts them: a metadata box in moov, a free box, after the rest.
        let udta = mp4_box(b"udta", &mp4_box(b"meta", SCRIPT));
        let moov2 = mp4_box(b"moov", &[&clean[moov.body..moov.end], udta.as_slice()].concat());
        let hostile = [&clean[..moov.start], moov2.as_slice(), &mp4_box(b"free", ZIP), SCRIPT, ZIP].concat();
        let kept = keep_audio(AudioKind::M4a, &hostile).unwrap();
        for payload in [SCRIPT, ZIP, b"evil.exe".as_slice()] {
            assert!(!contains(&kept, payload));
        }
        let (a, b) = (decode(&clean, "m4a"), decode(&kept, "m4a"));
        assert!(!a.is_empty() && a == b, "{} / {} samples", a.len(), b.len());
        assert!(crate::audio::duration_ms(AudioKind::M4a, &kept).is_ok());
    }

    #[test]
    fn wav_keeps_its_format_and_data_chunks_only() {
        use crate::audio::duration::tests::{fmt_pcm, riff};
        let data: Vec<u8> = (0..2000u32).flat_map(|i| ((i * 37 % 1000) as i16).to_le_bytes()).collect();
        let clean = riff(&[(b"fmt ", fmt_pcm(8000, 1, 16)), (b"data", data.clone())], None);
        let hostile = riff(&[(b"fmt ", fmt_pcm(8000, 1, 16)), (b"LIST", SCRIPT.to_vec()), (b"data", data)], None);
        let hostile = [hostile.as_slice(), ZIP].concat();
        let kept = keep_audio(AudioKind::Wav, &hostile).unwrap();
        assert_eq!(kept, clean);
    }
}
