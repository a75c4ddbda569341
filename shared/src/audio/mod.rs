//! Audio: how long a file plays, read from its container (`duration`), uncompressed audio stored
//! as MP3 (`mp3`), and what stored audio keeps of a file: its audio only (`keep`).

mod duration;
mod keep;
mod mp3;

pub use duration::{duration_ms, Corrupt};
pub use keep::keep_audio;
pub use mp3::{to_mp3, Encoded};

/// Every sample `bytes` decodes to, interleaved (symphonia, by the file `extension`'s format):
/// what tests compare to say two files play the same.
#[cfg(any(test, feature = "test-util"))]
pub fn decode_samples(bytes: &[u8], extension: &str) -> Result<Vec<f32>, String> {
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;

    let source = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes.to_vec())), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(Hint::new().with_extension(extension), source, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| format!("probe: {e}"))?;
    let track = format.default_track(TrackType::Audio).ok_or("no audio track")?;
    let id = track.id;
    let params = track.codec_params.as_ref().and_then(|p| p.audio()).ok_or("no audio parameters")?.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| format!("decoder: {e}"))?;
    let (mut out, mut buf) = (Vec::new(), Vec::<f32>::new());
    while let Ok(Some(packet)) = format.next_packet() {
        if packet.track_id != id {
            continue;
        }
        let Ok(decoded) = decoder.decode(&packet) else { continue };
        buf.resize(decoded.samples_interleaved(), 0.0);
        decoded.copy_to_slice_interleaved(&mut buf);
        out.extend_from_slice(&buf);
    }
    Ok(out)
}
