//! Uncompressed audio (WAV, AIFF, FLAC) stored as MP3, the one format every Anki client plays.
//!
//! Decoding is symphonia's (pure Rust); encoding is LAME 3.100 (`mp3lame-encoder`, which builds
//! LAME from source and links it statically). LAME is LGPL: the binaries that contain it run on
//! our Lambda functions and are not distributed, and this repository holds the complete source
//! they are built from, so anyone given a binary could relink it.
//!
//! The settings are LAME's `-V 4` (VBR, the "new" algorithm, LAME's default `-q 3`): transparent
//! for speech and good for music at about 130-160 kbps for stereo at 44.1 kHz and much less for
//! mono speech. Mono stays mono, and LAME keeps the sample rate for every MPEG rate up to 48 kHz
//! (it lowers higher ones to 48 kHz, above hearing). The stream is decoded and encoded one packet
//! at a time: memory is the input, the output (never more than the input: encoding stops as soon
//! as it would be no smaller) and one packet, whatever the headers claim.

use std::io::Cursor;

use mp3lame_encoder::{Builder, FlushGap, InterleavedPcm, Mode, MonoPcm, Quality, VbrMode};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as DecodeError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::duration::{channel_count, duration_ms, Corrupt};
use crate::sniff::AudioKind;

/// Sample rates LAME is given (it resamples those above 48 kHz); others stay as uploaded.
const RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;
/// How much longer than its header says a file may decode before it counts as corrupt.
const SLACK_MS: u64 = 1_000;

/// An MP3 encoding of an uncompressed file.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub sample_rate: u32,
    pub channels: usize,
}

/// `bytes` (WAV, AIFF or FLAC, `declared_ms` long by its header) as MP3, or `None` when that is
/// not smaller or the audio is of a kind not encoded (more than two channels, an unusual rate,
/// a codec symphonia does not decode, such as ADPCM in WAV): those are stored as uploaded.
/// Audio that stops decoding, or that decodes to a length other than its header's, is corrupt.
pub fn to_mp3(kind: AudioKind, bytes: &[u8], declared_ms: u64) -> Result<Option<Encoded>, Corrupt> {
    let extension = match kind {
        AudioKind::Wav => "wav",
        AudioKind::Aiff => "aiff",
        AudioKind::Flac => "flac",
        _ => return Ok(None),
    };
    if !matches!(channel_count(kind, bytes), Some(1 | 2)) {
        return unsupported("not mono or stereo");
    }
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut format = match symphonia::default::get_probe().probe(
        Hint::new().with_extension(extension),
        source,
        FormatOptions::default(),
        MetadataOptions::default(),
    ) {
        Ok(format) => format,
        Err(DecodeError::Unsupported(what)) => return unsupported(what),
        Err(e) => return Err(corrupt(&e)),
    };
    let Some(track) = format.default_track(TrackType::Audio) else { return Err(Corrupt("no audio track")) };
    let track_id = track.id;
    let Some(params) = track.codec_params.as_ref().and_then(|p| p.audio()) else {
        return unsupported("codec parameters");
    };
    let (Some(rate), Some(channels)) = (params.sample_rate, params.channels.as_ref().map(|c| c.count())) else {
        return unsupported("no rate or channel count");
    };
    if !RATES.contains(&rate) || !(1..=2).contains(&channels) {
        return unsupported("rate or channel count");
    }
    // FLAC carries an MD5 of its samples: check it at the end.
    let mut options = AudioDecoderOptions::default();
    options.verify = true;
    let mut decoder = match symphonia::default::get_codecs().make_audio_decoder(params, &options) {
        Ok(decoder) => decoder,
        Err(DecodeError::Unsupported(what)) => return unsupported(what),
        Err(e) => return Err(corrupt(&e)),
    };

    let mut encoder = encoder(rate, channels).ok_or(Corrupt("the encoder refused the stream"))?;
    let limit_frames = (declared_ms + SLACK_MS) * u64::from(rate) / 1000;
    let (mut frames, mut pcm, mut out) = (0u64, Vec::<f32>::new(), Vec::<u8>::new());
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A WAV or AIFF ends where its data ends; reading past it is the end, not damage.
            Err(DecodeError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(corrupt(&e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buffer = decoder.decode(&packet).map_err(|e| corrupt(&e))?;
        if buffer.spec().rate() != rate || buffer.spec().channels().count() != channels {
            return unsupported("the format changes mid-stream");
        }
        frames += buffer.frames() as u64;
        if frames > limit_frames {
            return Err(Corrupt("more audio than its header says"));
        }
        pcm.resize(buffer.samples_interleaved(), 0.0);
        buffer.copy_to_slice_interleaved(&mut pcm);
        // LAME's bound on what one call writes: 1.25 × samples + 7200 bytes.
        out.reserve(buffer.frames() * 5 / 4 + 7200);
        let written = if channels == 1 {
            encoder.encode_to_vec(MonoPcm(pcm.as_slice()), &mut out)
        } else {
            encoder.encode_to_vec(InterleavedPcm(pcm.as_slice()), &mut out)
        };
        written.map_err(|_| Corrupt("the encoder failed"))?;
        if out.len() >= bytes.len() {
            return Ok(None); // no saving: stop early, keep the upload
        }
    }
    if decoder.finalize().verify_ok == Some(false) {
        return Err(Corrupt("samples do not match the stream's checksum"));
    }
    if (frames * 1000 / u64::from(rate)).abs_diff(declared_ms) > 50 {
        return Err(Corrupt("decodes to another length than its header says"));
    }
    out.reserve(7200);
    encoder.flush_to_vec::<FlushGap>(&mut out).map_err(|_| Corrupt("the encoder failed"))?;
    // LAME's first frame is a placeholder for the Xing/LAME tag (frame count, encoder delay and
    // padding, which gapless players trim): write the tag over it now that the counts are known.
    let mut tag = Vec::with_capacity(encoder.lame_tag_size());
    if encoder.lame_tag_encode_to_vec(&mut tag).is_some() && tag.len() <= out.len() {
        out[..tag.len()].copy_from_slice(&tag);
    }
    if out.len() >= bytes.len() || duration_ms(AudioKind::Mp3, &out).is_err() {
        return Ok(None);
    }
    Ok(Some(Encoded { bytes: out, sample_rate: encoder.sample_rate(), channels }))
}

fn encoder(rate: u32, channels: usize) -> Option<mp3lame_encoder::Encoder> {
    let mut b = Builder::new()?;
    b.set_sample_rate(rate).ok()?;
    b.set_num_channels(channels as u8).ok()?;
    b.set_mode(if channels == 1 { Mode::Mono } else { Mode::JointStereo }).ok()?;
    b.set_vbr_mode(VbrMode::Mtrh).ok()?;
    b.set_vbr_quality(Quality::Nice).ok()?; // -V 4
    b.set_to_write_vbr_tag(true).ok()?;
    b.build().ok()
}

fn unsupported(what: &str) -> Result<Option<Encoded>, Corrupt> {
    tracing::info!(what, "audio stored as uploaded");
    Ok(None)
}

fn corrupt(e: &DecodeError) -> Corrupt {
    tracing::info!(error = %e, "audio does not decode");
    Corrupt("does not decode")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::duration::tests::{aiff_file, fmt_pcm, riff};

    /// `seconds` of a 440 Hz tone, 16-bit PCM WAV.
    fn tone_wav(rate: u32, channels: u16, seconds: f64) -> Vec<u8> {
        let frames = (f64::from(rate) * seconds) as usize;
        let mut data = Vec::with_capacity(frames * 2 * channels as usize);
        for i in 0..frames {
            let v = (0.5 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin() * 32767.0) as i16;
            for _ in 0..channels {
                data.extend_from_slice(&v.to_le_bytes());
            }
        }
        riff(&[(b"fmt ", fmt_pcm(rate, channels, 16)), (b"data", data)], None)
    }

    #[test]
    fn a_wav_tone_becomes_a_much_smaller_mp3_of_the_same_length_and_channels() {
        for (rate, channels) in [(44_100, 2), (22_050, 1), (48_000, 1), (8_000, 1)] {
            let wav = tone_wav(rate, channels, 2.0);
            let declared = duration_ms(AudioKind::Wav, &wav).unwrap();
            let mp3 = to_mp3(AudioKind::Wav, &wav, declared).unwrap().expect("smaller");
            assert!(mp3.bytes.len() * 4 < wav.len(), "{rate} Hz: {} of {}", mp3.bytes.len(), wav.len());
            assert_eq!((mp3.sample_rate, mp3.channels), (rate, channels as usize));
            let played = duration_ms(AudioKind::Mp3, &mp3.bytes).unwrap();
            // The MP3's frames hold LAME's delay and padding too (which gapless players trim): at
            // most three frames more, of 1152 samples (MPEG-1) or 576 (below 32 kHz).
            let frame_ms = if rate < 32_000 { 576_000 } else { 1_152_000 } / u64::from(rate);
            assert!((declared..=declared + 3 * frame_ms).contains(&played), "{rate} Hz: {played} ms for {declared} ms");
        }
    }

    #[test]
    fn an_aiff_becomes_an_mp3_and_one_cut_short_is_corrupt() {
        let aiff = aiff_file(22_050, 1, 44_100, 88_200);
        let mp3 = to_mp3(AudioKind::Aiff, &aiff, 2_000).unwrap().expect("smaller");
        assert_eq!((mp3.sample_rate, mp3.channels), (22_050, 1));
        assert!(mp3.bytes.len() * 10 < aiff.len());
        // COMM promises two seconds, SSND holds one: the header check refuses it first, and the
        // decoder would too.
        let short = aiff_file(22_050, 1, 44_100, 44_100);
        assert!(duration_ms(AudioKind::Aiff, &short).is_err());
        assert!(to_mp3(AudioKind::Aiff, &short, 2_000).is_err());
    }

    #[test]
    fn audio_that_decodes_longer_or_shorter_than_its_header_is_corrupt() {
        let wav = tone_wav(8_000, 1, 3.0);
        assert_eq!(to_mp3(AudioKind::Wav, &wav, 1_000).unwrap_err(), Corrupt("more audio than its header says"));
        assert_eq!(
            to_mp3(AudioKind::Wav, &wav, 2_800).unwrap_err(),
            Corrupt("decodes to another length than its header says")
        );
    }

    #[test]
    fn what_is_not_worth_encoding_or_not_decodable_is_kept() {
        // A few milliseconds: the MP3's header frames outweigh the samples.
        let tiny = tone_wav(8_000, 1, 0.005);
        assert!(to_mp3(AudioKind::Wav, &tiny, duration_ms(AudioKind::Wav, &tiny).unwrap()).unwrap().is_none());
        // Not an uncompressed kind at all.
        assert!(to_mp3(AudioKind::Mp3, b"\xff\xfb", 0).unwrap().is_none());
        // A WAV of three channels.
        let three = tone_wav(8_000, 3, 1.0);
        assert!(to_mp3(AudioKind::Wav, &three, 1_000).unwrap().is_none());
    }

    #[test]
    fn random_bytes_after_a_header_never_panic() {
        let wav = tone_wav(8_000, 1, 0.5);
        let mut seed = 7u64;
        for _ in 0..200 {
            let mut b = wav.clone();
            for _ in 0..8 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let at = (seed >> 33) as usize % b.len();
                b[at] = (seed >> 24) as u8;
            }
            if let Ok(d) = duration_ms(AudioKind::Wav, &b) {
                let _ = to_mp3(AudioKind::Wav, &b, d);
            }
        }
    }
}
