//! Decoding stills within the limits (JPEG through `jpeg.rs`): pixels checked on the header before
//! any is allocated, 16-bit samples by their high byte, and the float TIFFs `image` does not read.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader};

use super::jpeg;
use crate::model::RejectReason;
use crate::policy::Limits;
use crate::sniff::ImageKind;

pub(super) fn decode_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    // Room for the largest allowed picture as 16-bit RGBA plus decoder working memory.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8) + (64 << 20));
    l
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> RejectReason {
    tracing::info!(error = %e, "image did not decode");
    RejectReason::CorruptMedia
}

pub(super) fn check_pixels(w: u32, h: u32, limits: &Limits) -> Result<(), RejectReason> {
    if w == 0 || h == 0 {
        return Err(RejectReason::CorruptMedia);
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(RejectReason::TooManyPixels);
    }
    Ok(())
}

pub(super) fn decode_still(
    kind: ImageKind,
    bytes: &[u8],
    limits: &Limits,
) -> Result<(DynamicImage, image::metadata::Orientation), RejectReason> {
    if kind == ImageKind::Jpeg {
        return jpeg::decode(bytes, limits);
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), kind.image_format());
    reader.limits(decode_limits(limits));
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    // Refuse on the header's dimensions, before a single pixel is allocated.
    let (w, h) = decoder.dimensions();
    check_pixels(w, h, limits)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    Ok((high_bytes(DynamicImage::from_decoder(decoder).map_err(corrupt)?), orientation))
}

/// 16-bit samples (PNG, TIFF) to 8 bits by their high byte, as Pillow reads 16-bit colour, so
/// that the pixels we encode are the plugin's; the `image` crate's own conversion rounds, which
/// moves about half the samples by one level. (Pillow turns 16-bit grayscale white above 1/256
/// of full scale; the high byte is what it means.)
fn high_bytes(img: DynamicImage) -> DynamicImage {
    fn high<P: image::Pixel<Subpixel = u8>>(
        samples: &[u16],
        width: u32,
        height: u32,
    ) -> image::ImageBuffer<P, Vec<u8>> {
        let mut out = image::ImageBuffer::<P, Vec<u8>>::new(width, height);
        for (to, from) in out.iter_mut().zip(samples) {
            *to = (from >> 8) as u8;
        }
        out
    }
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageLuma16(i) => DynamicImage::ImageLuma8(high(&i, w, h)),
        DynamicImage::ImageLumaA16(i) => DynamicImage::ImageLumaA8(high(&i, w, h)),
        DynamicImage::ImageRgb16(i) => DynamicImage::ImageRgb8(high(&i, w, h)),
        DynamicImage::ImageRgba16(i) => DynamicImage::ImageRgba8(high(&i, w, h)),
        other => other,
    }
}

/// Floating-point TIFFs (scientific images, e.g. from scikit-image), which the `image` crate does
/// not decode: samples in 0..1 (or scaled by their maximum), chunky or one strip per plane.
pub(super) fn decode_float_tiff(bytes: &[u8], limits: &Limits) -> Result<DynamicImage, RejectReason> {
    use tiff::decoder::{Decoder, DecodingResult};
    use tiff::ColorType;
    let mut d = Decoder::new(Cursor::new(bytes)).map_err(corrupt)?;
    let (w, h) = d.dimensions().map_err(corrupt)?;
    check_pixels(w, h, limits)?;
    let channels = match d.colortype().map_err(corrupt)? {
        ColorType::Gray(_) => 1,
        ColorType::RGB(_) => 3,
        ColorType::RGBA(_) => 4,
        other => return Err(corrupt(format!("TIFF colour type {other:?}"))),
    };
    let floats = |r: DecodingResult| -> Result<Vec<f64>, RejectReason> {
        match r {
            DecodingResult::F64(v) => Ok(v),
            DecodingResult::F32(v) => Ok(v.into_iter().map(f64::from).collect()),
            _ => Err(RejectReason::CorruptMedia),
        }
    };
    let plane = (w * h) as usize;
    let first = floats(d.read_image().map_err(corrupt)?)?;
    let interleaved = if first.len() == plane * channels {
        first
    } else if first.len() == plane && d.strip_count().map_err(corrupt)? as usize == channels {
        // Planar: one strip per channel.
        let mut planes = vec![first];
        for c in 1..channels {
            planes.push(floats(d.read_chunk(c as u32).map_err(corrupt)?)?);
        }
        if planes.iter().any(|p| p.len() != plane) {
            return Err(RejectReason::CorruptMedia);
        }
        (0..plane * channels).map(|i| planes[i % channels][i / channels]).collect()
    } else {
        return Err(RejectReason::CorruptMedia);
    };
    let max = interleaved.iter().copied().fold(1.0f64, f64::max);
    let bytes: Vec<u8> = interleaved.iter().map(|v| ((v / max).clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    let img = match channels {
        1 => image::GrayImage::from_raw(w, h, bytes).map(DynamicImage::ImageLuma8),
        3 => image::RgbImage::from_raw(w, h, bytes).map(DynamicImage::ImageRgb8),
        _ => image::RgbaImage::from_raw(w, h, bytes).map(DynamicImage::ImageRgba8),
    };
    img.ok_or(RejectReason::CorruptMedia)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16-bit PNGs are read as Pillow reads them: each sample's high byte, not its rounding.
    #[test]
    fn sixteen_bit_samples_keep_their_high_byte() {
        use image::{codecs::png::PngEncoder, ExtendedColorType, ImageEncoder};
        let values: Vec<u16> = vec![0, 127, 128, 255, 256, 383, 384, 32767, 32768, 65407, 65408, 65535];
        let width = values.len() as u32;
        for (colour, channels) in
            [(ExtendedColorType::L16, 1), (ExtendedColorType::Rgb16, 3), (ExtendedColorType::Rgba16, 4)]
        {
            let samples: Vec<u16> = values.iter().flat_map(|&v| std::iter::repeat_n(v, channels)).collect();
            let raw: Vec<u8> = samples.iter().flat_map(|v| v.to_ne_bytes()).collect();
            let mut png = Vec::new();
            PngEncoder::new(&mut png).write_image(&raw, width, 1, colour).unwrap();
            let (img, _) = decode_still(ImageKind::Png, &png, &Limits::default()).unwrap();
            let got: Vec<u8> = img.into_rgba8().pixels().map(|p| p.0[0]).collect();
            let want: Vec<u8> = values.iter().map(|v| (v >> 8) as u8).collect();
            assert_eq!(got, want, "{colour:?}");
        }
    }
}
