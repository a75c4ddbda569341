//! Image processing: decode within limits, orient, drop metadata, pick the smallest good encoding,
//! and make a thumbnail. Pure CPU work with no I/O; callers run it on a blocking thread.

mod animation;
mod decode;
mod encode;
mod jpeg;
mod libwebp;
mod search;
mod ssim;
mod strip;

use crate::model::RejectReason;
use crate::policy::{Effort, Limits};
use crate::sniff::ImageKind;
use animation::{decode_animation, encode_animation};
use decode::{decode_float_tiff, decode_still};
use encode::{Pixels, LOSSLESS, LOSSY};
use search::Search;

pub(crate) use encode::thumbnail;
pub use encode::{WebpSettings, GRAPHIC_MAX_COLOURS, METHOD, PHOTO_QUALITY, THUMBNAIL_QUALITY};
pub use search::{SearchPlan, SearchStats, SEARCH_MAX_PIXELS};
pub use ssim::{ssim, Picture};
pub use strip::{jpeg_is_complete, strip_metadata};

/// Below this many pixels a graphic is kept lossless even when lossy is smaller.
const TINY_PIXELS: u64 = 64 * 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lossy WebP.
    Lossy,
    /// Lossless WebP.
    Lossless,
    /// The uploaded bytes, minus their metadata.
    Original,
    /// Animated WebP.
    Animated,
}

#[derive(Debug)]
pub struct ProcessedImage {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    pub encoding: Encoding,
    pub thumbnail: Vec<u8>,
    /// The WebP encoding that was stored, or that the original beat.
    pub webp: WebpSettings,
    /// When the search ran: the SSIM of the q85 floor and of the lossy encoding it kept.
    pub ssim: Option<(f64, f64)>,
    /// When the search ran: how it went.
    pub search: Option<SearchStats>,
}

/// Turn uploaded image bytes into what we store. Never returns something larger than `bytes`
/// unless the original cannot be kept (wrong orientation, BMP/TIFF, or a payload after the image).
pub fn process_image(kind: ImageKind, bytes: &[u8], limits: &Limits) -> Result<ProcessedImage, RejectReason> {
    process_image_with(kind, bytes, limits, &SearchPlan::default())
}

/// [`process_image`] with another search plan (benchmarks compare plans).
pub fn process_image_with(
    kind: ImageKind,
    bytes: &[u8],
    limits: &Limits,
    plan: &SearchPlan,
) -> Result<ProcessedImage, RejectReason> {
    if bytes.len() as u64 > limits.max_image_bytes {
        return Err(RejectReason::TooLarge);
    }
    if kind == ImageKind::Jpeg && !jpeg_is_complete(bytes) {
        return Err(RejectReason::CorruptMedia);
    }
    if let Some(frames) = decode_animation(kind, bytes, limits)? {
        return encode_animation(kind, bytes, frames, limits);
    }

    let (mut img, orientation) = match decode_still(kind, bytes, limits) {
        Err(RejectReason::CorruptMedia) if kind == ImageKind::Tiff => {
            (decode_float_tiff(bytes, limits)?, image::metadata::Orientation::NoTransforms)
        }
        other => other?,
    };
    img.apply_orientation(orientation);
    let upright = orientation == image::metadata::Orientation::NoTransforms;

    let thumbnail = thumbnail(&img, limits.thumbnail_edge)?;
    let (width, height) = (img.width(), img.height());
    let area = u64::from(width) * u64::from(height);
    let tiny = area < TINY_PIXELS;
    // Consumes the decoded image, so that one full-size copy of the pixels is alive (the search
    // decodes one candidate at a time beside it).
    let pixels = Pixels::from_image(img);
    let floor = pixels.encode(&LOSSY)?;
    // Few colours (screenshots, text, diagrams): lossless is exact and sometimes smaller, but
    // grayscale photos and anti-aliased text are often three times smaller lossy.
    let lossless = if kind != ImageKind::Jpeg && pixels.is_graphic() { Some(pixels.encode(&LOSSLESS)?) } else { None };
    // What a searched encoding must be smaller than to be worth keeping.
    let limit = lossless.as_ref().map_or(floor.len(), |l| l.len().min(floor.len()));
    let (mut ssim, mut search) = (None, None);
    let (mut settings, mut webp) = match limits.effort {
        Effort::Smallest if !tiny && area <= SEARCH_MAX_PIXELS => match pixels.smaller_than(&floor, limit, plan)? {
            None => (LOSSY, floor),
            Some(Search { bar, best: None, stats }) => {
                (ssim, search) = (Some((bar, bar)), Some(stats));
                (LOSSY, floor)
            }
            Some(Search { bar, best: Some(found), stats }) => {
                (ssim, search) = (Some((bar, found.score)), Some(stats));
                (found.settings, found.bytes)
            }
        },
        _ => (LOSSY, floor),
    };
    if let Some(lossless) = lossless {
        // Tiny images stay lossless: a few hundred bytes saved are not worth 4:2:0 chroma on ten
        // pixels.
        if lossless.len() <= webp.len() || tiny {
            (settings, webp) = (LOSSLESS, lossless);
        }
    }
    drop(pixels);
    let encoding = if settings.lossless { Encoding::Lossless } else { Encoding::Lossy };

    let webp = ProcessedImage {
        bytes: webp,
        content_type: "image/webp",
        width,
        height,
        encoding,
        thumbnail,
        webp: settings,
        ssim,
        search,
    };
    // Stripping drops the Exif orientation, so a rotated original would show the picture unrotated.
    Ok(keep_smaller(kind, bytes, upright, webp))
}

/// The uploaded bytes without their metadata, when `same_picture` (they show what the WebP shows)
/// and they are no larger than the WebP; otherwise the WebP. Everything but the bytes, content type
/// and encoding is the WebP's, so the result still says which WebP the original beat.
fn keep_smaller(kind: ImageKind, bytes: &[u8], same_picture: bool, webp: ProcessedImage) -> ProcessedImage {
    // Keeping the original is allowed only if it shows the same picture without metadata.
    let original = same_picture.then(|| strip_metadata(kind, bytes)).flatten();
    match original {
        Some(orig) if orig.len() <= webp.bytes.len() => {
            ProcessedImage { bytes: orig, content_type: kind.content_type(), encoding: Encoding::Original, ..webp }
        }
        _ => webp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture of the corpus's `real/`.
    pub(super) fn corpus(name: &str) -> Vec<u8> {
        crate::corpus_file(&format!("real/{name}"))
    }

    fn with(effort: Effort) -> Limits {
        Limits { effort, ..Limits::default() }
    }

    /// The upright pixels process_image starts from.
    fn upright(kind: ImageKind, input: &[u8]) -> Pixels {
        let (mut img, orientation) = decode_still(kind, input, &Limits::default()).unwrap();
        img.apply_orientation(orientation);
        Pixels::from_image(img)
    }

    /// SSIM the plain way, sharing nothing with `ssim.rs` or libwebp: WebP decoded by the image
    /// crate's own decoder, alpha composited on white in f64, each channel's means, variances
    /// and covariance filtered whole by a separable Gaussian (σ 1.5, 11 taps), averaged over the
    /// picture less the 5-pixel border and over the three channels.
    fn reference_ssim(original: &Pixels, webp: &[u8]) -> f64 {
        let decoded = image::load_from_memory_with_format(webp, image::ImageFormat::WebP).unwrap().to_rgba8();
        let (w, h) = (original.width as usize, original.height as usize);
        assert_eq!((decoded.width() as usize, decoded.height() as usize), (w, h));
        let n = original.channels();
        let on_white = |v: u8, a: u8| f64::from(v) * f64::from(a) / 255.0 + 255.0 * (1.0 - f64::from(a) / 255.0);
        let k: Vec<f64> = (0..11).map(|i| (-0.5 * (i as f64 - 5.0).powi(2) / 2.25).exp()).collect();
        let sum: f64 = k.iter().sum();
        let k: Vec<f64> = k.iter().map(|x| x / sum).collect();
        // Valid-region Gaussian filter: out[y][x] for the window centred at (y + 5, x + 5).
        let blur = |p: &[f64]| -> Vec<f64> {
            let (ow, oh) = (w - 10, h - 10);
            let rows: Vec<f64> = (0..h)
                .flat_map(|y| (0..ow).map(move |x| (y, x)))
                .map(|(y, x)| (0..11).map(|i| k[i] * p[y * w + x + i]).sum())
                .collect();
            (0..oh)
                .flat_map(|y| (0..ow).map(move |x| (y, x)))
                .map(|(y, x)| (0..11).map(|i| k[i] * rows[(y + i) * ow + x]).sum())
                .collect()
        };
        let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
        let mut total = 0.0;
        for c in 0..3 {
            let mut a = Vec::with_capacity(w * h);
            let mut b = Vec::with_capacity(w * h);
            for (i, px) in original.data.chunks_exact(n).enumerate() {
                let q = decoded.as_raw()[i * 4..i * 4 + 4].to_vec();
                if original.alpha {
                    a.push(on_white(px[c], px[3]));
                    b.push(on_white(q[c], q[3]));
                } else {
                    a.push(f64::from(px[c]));
                    b.push(f64::from(q[c]));
                }
            }
            let (ma, mb) = (blur(&a), blur(&b));
            let sq = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).collect::<Vec<f64>>();
            let (aa, bb, ab) = (blur(&sq(&a, &a)), blur(&sq(&b, &b)), blur(&sq(&a, &b)));
            let mut s = 0.0;
            for i in 0..ma.len() {
                let (va, vb, cov) = (aa[i] - ma[i] * ma[i], bb[i] - mb[i] * mb[i], ab[i] - ma[i] * mb[i]);
                s += ((2.0 * ma[i] * mb[i] + c1) * (2.0 * cov + c2))
                    / ((ma[i] * ma[i] + mb[i] * mb[i] + c1) * (va + vb + c2));
            }
            total += s / ma.len() as f64;
        }
        total / 3.0
    }

    /// The search's promise, checked from the outside on a sample of the corpus (photos, a
    /// drawing, text, an icon with alpha, a screenshot, a rotated phone photo, and a picture
    /// large enough to be searched on a sample): what `smallest` stores is no larger than what
    /// `fast` stores, and when it is WebP it scores at least the q85 encoding, both scored again
    /// here from the bytes by [`reference_ssim`].
    #[test]
    fn smallest_is_no_larger_and_no_worse_than_q85() {
        let sample = [
            ("Minduka_Present_Blue_Pack.png", ImageKind::Png),
            ("grace_hopper.jpg", ImageKind::Jpeg),
            ("chelsea.png", ImageKind::Png),
            ("text.png", ImageKind::Png),
            ("logo.png", ImageKind::Png),
            ("screenshot-1.bmp", ImageKind::Bmp),
            ("phone-exif-rotated-1.jpg", ImageKind::Jpeg),
            ("retina.jpg", ImageKind::Jpeg),
        ];
        // One thread per picture: this is the fast lane's longest test (`make unit`).
        let sampled = std::thread::scope(|s| {
            let threads = sample.map(|(name, kind)| s.spawn(move || check(name, kind)));
            threads.into_iter().map(|t| t.join().expect("a picture's check failed (above)")).collect::<Vec<_>>()
        });
        assert!(sampled.contains(&true), "no picture was large enough to be searched on a sample");

        /// Whether the search sampled this picture.
        fn check(name: &str, kind: ImageKind) -> bool {
            let input = corpus(name);
            let fast = process_image(kind, &input, &with(Effort::Fast)).unwrap();
            let small = process_image(kind, &input, &with(Effort::Smallest)).unwrap();
            assert_eq!((fast.ssim, fast.search), (None, None), "{name}");
            assert!(small.bytes.len() <= fast.bytes.len(), "{name}: {} > {}", small.bytes.len(), fast.bytes.len());
            let stats = small.search.expect("the search ran");

            let pixels = upright(kind, &input);
            let floor = reference_ssim(&pixels, &pixels.encode(&LOSSY).unwrap());
            if small.content_type == "image/webp" {
                let stored = reference_ssim(&pixels, &small.bytes);
                assert!(stored >= floor, "{name}: stored {stored} < q85 floor {floor} ({:?})", small.webp);
            }
            let (reported_floor, kept) = small.ssim.unwrap();
            assert!((reported_floor - floor).abs() < 1e-4, "{name}: ssim.rs {reported_floor}, reference {floor}");
            assert!(kept >= reported_floor, "{name}");
            stats.sampled
        }
    }

    /// A drawing the search shrinks (BENCHMARKS.md): `smallest` must find a smaller lossy
    /// encoding here, or it has stopped working.
    #[test]
    fn smallest_finds_a_smaller_encoding_for_a_graphic() {
        let input = corpus("Minduka_Present_Blue_Pack.png");
        let fast = process_image(ImageKind::Png, &input, &with(Effort::Fast)).unwrap();
        let small = process_image(ImageKind::Png, &input, &with(Effort::Smallest)).unwrap();
        assert_ne!(small.webp, LOSSY, "kept q85");
        assert!(small.bytes.len() < fast.bytes.len() * 95 / 100, "{} vs {}", small.bytes.len(), fast.bytes.len());
    }

    #[test]
    fn fast_makes_one_encoding_and_efforts_parse() {
        let small =
            process_image(ImageKind::Png, &corpus("Minduka_Present_Blue_Pack.png"), &with(Effort::Fast)).unwrap();
        assert!(matches!(small.webp, LOSSY | LOSSLESS), "{:?}", small.webp);
        assert_eq!("fast".parse(), Ok(Effort::Fast));
        assert_eq!("smallest".parse(), Ok(Effort::Smallest));
        assert!("best".parse::<Effort>().is_err());
    }
}
