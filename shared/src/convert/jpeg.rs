//! JPEG decoding by libjpeg-turbo, the decoder Pillow and cwebp use (through `mozjpeg-sys`, whose
//! decoder is libjpeg-turbo's, statically linked). Its integer IDCT, fancy upsampling and colour
//! conversion give the AnkiCollab plugin's pixels to the bit, so an image's q85 encoding here is
//! byte for byte the plugin's and its quality floor is the plugin's own. zune-jpeg (the `image`
//! crate's decoder) differed by up to 5 levels on up to 14% of the pixels, enough for a q85
//! encoding of its pixels to score below Pillow's (BENCHMARKS.md, "Conversion").
//!
//! libjpeg reports a fatal error by calling `error_exit`, which must not return: ours unwinds to
//! [`decode`] (the C is built with `-fexceptions` for that, mozjpeg-sys's `unwinding` feature) with
//! a payload that becomes `corrupt_media`, without the panic hook's log line. Hostile files are
//! bounded as the other decoders are: the header's pixel count is checked before anything is
//! allocated, libjpeg's whole-image buffers (progressive and multi-scan files) are capped, a file
//! may not have more than [`MAX_SCANS`] scans (each scan of a progressive file walks every block,
//! so thousands of tiny scans would make a small file decode for minutes), running out of data
//! is an error rather than libjpeg's grey fill, and libjpeg saves no markers (its list of them is
//! quadratic in their number): the Exif orientation is read from the bytes ([`super::strip::jpeg_exif`]).

use std::ffi::{c_int, c_long, c_ulong, CStr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use mozjpeg_sys as sys;

use super::decode::{check_pixels, corrupt, decode_limits};
use crate::model::RejectReason;
use crate::policy::Limits;

/// Progressive files have about 10 scans (libjpeg's default script) and rarely more than 20.
pub const MAX_SCANS: c_int = 100;
/// Rows handed to libjpeg per call (its own row groups are at most 16 tall).
const ROWS_PER_CALL: usize = 16;

/// What `error_exit` unwinds with: libjpeg's message.
struct Failure(String);

/// libjpeg's state for one decode. Boxed, because libjpeg keeps pointers to the error and
/// progress managers, which must not move.
struct Decompress {
    cinfo: sys::jpeg_decompress_struct,
    err: sys::jpeg_error_mgr,
    progress: sys::jpeg_progress_mgr,
}

impl Drop for Decompress {
    fn drop(&mut self) {
        // SAFETY: frees what libjpeg allocated; a no-op when creation never got that far (its
        // memory manager is still null), and allowed after an error exit.
        unsafe { sys::jpeg_destroy_decompress(&mut self.cinfo) }
    }
}

/// The pixels of a JPEG as Pillow decodes them (RGB, grayscale, or CMYK converted to RGB as
/// Pillow converts it), and the orientation its first Exif segment asks for (as browsers read it:
/// Pillow also falls back to XMP, which browsers ignore).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(DynamicImage, Orientation), RejectReason> {
    // SAFETY: every field is an integer, a nullable pointer or an `Option` of a function pointer,
    // for which all-zero is valid; libjpeg initialises the rest.
    let mut d: Box<Decompress> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY (the closure): `d` outlives the decode and is not moved while libjpeg holds pointers
    // into it; `bytes` outlives it too. If libjpeg unwinds, `d` is only destroyed afterwards.
    let (pixels, channels, width, height) = match catch_unwind(AssertUnwindSafe(|| unsafe { d.decode(bytes, limits) }))
    {
        Ok(result) => result?,
        // Only libjpeg's own errors are a verdict on the file; a bug of ours goes on unwinding.
        Err(payload) => match payload.downcast::<Failure>() {
            Ok(failure) => return Err(corrupt(format_args!("libjpeg: {}", failure.0))),
            Err(other) => resume_unwind(other),
        },
    };
    drop(d); // libjpeg's buffers, before the CMYK conversion allocates
    let image = match channels {
        1 => GrayImage::from_raw(width, height, pixels).map(DynamicImage::ImageLuma8),
        4 => RgbImage::from_raw(width, height, cmyk_to_rgb(&pixels)).map(DynamicImage::ImageRgb8),
        _ => RgbImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgb8),
    };
    let orientation =
        super::strip::jpeg_exif(bytes).and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
    Ok((image.ok_or_else(|| corrupt("pixel buffer size"))?, orientation))
}

/// Decoded samples, their channels per pixel (1, 3 or 4), width and height.
type Samples = (Vec<u8>, usize, u32, u32);

impl Decompress {
    unsafe fn decode(&mut self, bytes: &[u8], limits: &Limits) -> Result<Samples, RejectReason> {
        let err = sys::jpeg_std_error(&mut self.err);
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        err.output_message = Some(silent);
        self.cinfo.common.err = err;
        self.progress.progress_monitor = Some(progress_monitor);
        sys::jpeg_create_decompress(&mut self.cinfo);
        self.cinfo.common.progress = &mut self.progress;
        // Whole-image coefficient buffers, as the `image` decoders' allocation limit.
        (*self.cinfo.common.mem).max_memory_to_use =
            c_long::try_from(decode_limits(limits).max_alloc.unwrap_or(0)).unwrap_or(c_long::MAX);
        sys::jpeg_mem_src(&mut self.cinfo, bytes.as_ptr(), bytes.len() as c_ulong);
        sys::jpeg_read_header(&mut self.cinfo, 1);

        let (width, height) = (self.cinfo.image_width, self.cinfo.image_height);
        check_pixels(width, height, limits)?;
        use sys::J_COLOR_SPACE::*;
        let channels = match self.cinfo.jpeg_color_space {
            JCS_GRAYSCALE => 1,
            JCS_CMYK | JCS_YCCK => 4,
            _ => 3,
        };
        self.cinfo.out_color_space = match channels {
            1 => JCS_GRAYSCALE,
            4 => JCS_CMYK,
            _ => JCS_RGB,
        };
        sys::jpeg_start_decompress(&mut self.cinfo);
        let (w, h) = (self.cinfo.output_width as usize, self.cinfo.output_height as usize);
        if (w, h) != (width as usize, height as usize) || self.cinfo.output_components != channels as c_int {
            return Err(corrupt("libjpeg's output is not the header's size"));
        }

        let stride = w * channels;
        let mut pixels = vec![0u8; stride * h];
        while (self.cinfo.output_scanline as usize) < h {
            let first = self.cinfo.output_scanline as usize;
            let mut rows: Vec<*mut u8> =
                pixels[first * stride..].chunks_exact_mut(stride).take(ROWS_PER_CALL).map(<[u8]>::as_mut_ptr).collect();
            // With the whole file in memory libjpeg never suspends, so every call makes progress.
            if sys::jpeg_read_scanlines(&mut self.cinfo, rows.as_mut_ptr(), rows.len() as u32) == 0 {
                return Err(corrupt("libjpeg returned no rows"));
            }
        }
        // As Pillow does: reads on to the end of the image, where an error is still an error.
        sys::jpeg_finish_decompress(&mut self.cinfo);
        Ok((pixels, channels, width, height))
    }
}

/// Pillow's CMYK to RGB, after reading JPEG's CMYK as Adobe's inverted samples (what Pillow
/// assumes of every CMYK JPEG): each channel is K' × (1 − C'), in Pillow's integer arithmetic.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mul_div_255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            // Inverted samples: the ink is 255 − stored, and 255 − ink of K is the stored K.
            let nk = u32::from(p[3]);
            [0, 1, 2].map(|i| nk.saturating_sub(mul_div_255(255 - u32::from(p[i]), nk)) as u8)
        })
        .collect()
}

fn message(cinfo: &mut sys::jpeg_common_struct) -> String {
    // libjpeg's JMSG_LENGTH_MAX.
    let mut buffer = [0u8; 80];
    // SAFETY: `err` was set before libjpeg could report anything; format_message writes a
    // NUL-terminated message of at most 80 bytes into the buffer. The binding types that buffer as
    // a shared reference, but C writes to it, so it is called through a pointer type that says so
    // (same ABI: both are a plain pointer).
    unsafe {
        if let Some(format) = (*cinfo.err).format_message {
            type Format = unsafe extern "C-unwind" fn(&mut sys::jpeg_common_struct, *mut u8);
            let format: Format = std::mem::transmute(format);
            format(cinfo, buffer.as_mut_ptr());
        }
    }
    CStr::from_bytes_until_nul(&buffer).map_or_else(|_| "unknown error".into(), |m| m.to_string_lossy().into_owned())
}

/// Never returns: unwinds to [`decode`]. `resume_unwind` skips the panic hook, so a corrupt
/// upload is one log line (`corrupt`'s), not a panic report.
unsafe extern "C-unwind" fn error_exit(cinfo: &mut sys::jpeg_common_struct) {
    resume_unwind(Box::new(Failure(message(cinfo))))
}

/// Warnings are counted and ignored as Pillow ignores them (corrupt entropy data decodes as
/// best it can), except the data ending early, which Pillow refuses as a truncated file.
unsafe extern "C-unwind" fn emit_message(cinfo: &mut sys::jpeg_common_struct, level: c_int) {
    if level < 0 {
        (*cinfo.err).num_warnings += 1;
        if (*cinfo.err).msg_code == sys::JWRN_JPEG_EOF as c_int {
            error_exit(cinfo);
        }
    }
}

unsafe extern "C-unwind" fn silent(_: &mut sys::jpeg_common_struct) {}

/// Called by libjpeg as it reads: stops files with more than [`MAX_SCANS`] scans.
unsafe extern "C-unwind" fn progress_monitor(cinfo: &mut sys::jpeg_common_struct) {
    // SAFETY: only ever installed on a decompressor, whose struct starts with the common one.
    let scans = (*(cinfo as *mut sys::jpeg_common_struct).cast::<sys::jpeg_decompress_struct>()).input_scan_number;
    if scans > MAX_SCANS {
        resume_unwind(Box::new(Failure(format!("more than {MAX_SCANS} scans"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/jpeg");

    fn orientation_code(o: Orientation) -> u8 {
        use Orientation::*;
        match o {
            NoTransforms => 1,
            FlipHorizontal => 2,
            Rotate180 => 3,
            FlipVertical => 4,
            Rotate90FlipH => 5,
            Rotate90 => 6,
            Rotate270FlipH => 7,
            Rotate270 => 8,
        }
    }

    /// Every fixture (each subsampling, grayscale, CMYK, RGB, progressive, arithmetic, restart
    /// markers, Exif orientation) and every JPEG of the shared corpus decodes to exactly the
    /// pixels Pillow decodes it to (`testdata/jpeg/expected.txt`, made by `make-fixtures.py`), with
    /// the orientation Pillow reads.
    #[test]
    fn decodes_every_pixel_as_pillow_does() {
        let expected = std::fs::read_to_string(format!("{FIXTURES}/expected.txt")).unwrap();
        let mut checked = 0;
        for line in expected.lines().filter(|l| !l.starts_with('#')) {
            let [name, sha, orientation] = line.split(' ').collect::<Vec<_>>()[..] else { panic!("{line}") };
            // A fixture, else a file of the shared corpus.
            let bytes =
                std::fs::read(format!("{FIXTURES}/{name}")).unwrap_or_else(|_| super::super::tests::corpus(name));
            let (img, o) = decode(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let rgb = img.into_rgb8();
            assert_eq!(hex::encode(Sha256::digest(rgb.as_raw())), sha, "{name}: not Pillow's pixels");
            assert_eq!(orientation_code(o).to_string(), orientation, "{name}: orientation");
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} files in expected.txt");
    }

    /// A file whose data ends early is refused (libjpeg would fill the rest with grey), as are
    /// garbage after the SOI marker and an empty buffer; none of them panics.
    #[test]
    fn refuses_truncated_and_garbage() {
        let whole = std::fs::read(format!("{FIXTURES}/420.jpg")).unwrap();
        for cut in [whole.len() / 2, whole.len() - 2, 200, 2, 0] {
            assert_eq!(
                decode(&whole[..cut], &Limits::default()).unwrap_err(),
                RejectReason::CorruptMedia,
                "cut at {cut}"
            );
        }
        let mut garbage = vec![0xFF, 0xD8];
        garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        assert_eq!(decode(&garbage, &Limits::default()).unwrap_err(), RejectReason::CorruptMedia);
    }

    /// The header's size is checked before any pixel is allocated: a small file claiming
    /// 60000×60000 is refused as too many pixels (decoding first would allocate 10.8 GB and then
    /// fail on the missing data, as corrupt).
    #[test]
    fn refuses_too_many_pixels_from_the_header() {
        let bytes = std::fs::read(format!("{FIXTURES}/420.jpg")).unwrap();
        let limits = Limits { max_pixels: 121 * 87 - 1, ..Limits::default() };
        assert_eq!(decode(&bytes, &limits).unwrap_err(), RejectReason::TooManyPixels);
        let limits = Limits { max_pixels: 121 * 87, ..Limits::default() };
        assert!(decode(&bytes, &limits).is_ok());

        let mut huge = bytes.clone();
        let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        huge[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        assert_eq!(decode(&huge, &Limits::default()).unwrap_err(), RejectReason::TooManyPixels);
    }

    /// 250,000 empty APP1 segments (1 MB) before the Exif one decode as the file without them,
    /// with the Exif's orientation. libjpeg, asked to save APP1 markers, appends each by walking
    /// its whole list: minutes for this file, hours for one at the 10 MB upload limit. The
    /// watchdog turns such a regression into a failure instead of a test that runs for minutes.
    #[test]
    fn many_markers_cost_no_more_than_their_bytes() {
        let bytes = std::fs::read(format!("{FIXTURES}/exif-orientation-8.jpg")).unwrap();
        let mut many = bytes[..2].to_vec();
        for _ in 0..250_000 {
            many.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x02]);
        }
        many.extend_from_slice(&bytes[2..]);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(decode(&many, &Limits::default()).map(|(img, o)| (img.into_rgb8(), o))));
        let (img, orientation) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("1 MB of markers still decoding after a minute")
            .unwrap();
        let (plain, _) = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(img, plain.into_rgb8());
        assert_eq!(orientation_code(orientation), 8);
    }

    /// A progressive file whose first scan is repeated until it has more than [`MAX_SCANS`]
    /// scans (each a walk over every block) is refused; one scan fewer than the limit decodes.
    #[test]
    fn refuses_more_than_max_scans() {
        let bytes = std::fs::read(format!("{FIXTURES}/progressive.jpg")).unwrap();
        // The first scan: its SOS marker up to the next marker that is not a stuffed or RST byte.
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let header = usize::from(u16::from_be_bytes([bytes[sos + 2], bytes[sos + 3]]));
        let mut end = sos + 2 + header;
        while !(bytes[end] == 0xFF && bytes[end + 1] != 0 && !(0xD0..=0xD7).contains(&bytes[end + 1])) {
            end += 1;
        }
        let with_scans = |extra: usize| {
            let mut out = bytes[..end].to_vec();
            for _ in 0..extra {
                out.extend_from_slice(&bytes[sos..end]);
            }
            out.extend_from_slice(&bytes[end..]);
            out
        };
        let scans = bytes.windows(2).filter(|w| w == &[0xFF, 0xDA]).count();
        assert!(decode(&with_scans(MAX_SCANS as usize - scans), &Limits::default()).is_ok());
        assert_eq!(
            decode(&with_scans(MAX_SCANS as usize + 1 - scans), &Limits::default()).unwrap_err(),
            RejectReason::CorruptMedia
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Damaged files (bytes overwritten, cut out or repeated anywhere in a fixture of each
        /// kind, headers included) decode or are refused with a reason; libjpeg's errors come
        /// back as `corrupt_media`, never as an abort, and a panic of ours is not caught by
        /// `decode`, so it would fail this test.
        #[test]
        fn damaged_files_never_panic(
            fixture in prop::sample::select(vec!["420.jpg", "progressive.jpg", "arithmetic.jpg", "cmyk.jpg", "ycck.jpg", "restart.jpg", "411.jpg"]),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>(), 1usize..64), 1..6),
        ) {
            let mut bytes = std::fs::read(format!("{FIXTURES}/{fixture}")).unwrap();
            for (at, op, value, len) in edits {
                let i = at.index(bytes.len());
                let end = (i + len).min(bytes.len());
                match op {
                    0 => bytes[i..end].fill(value),
                    1 => { bytes.drain(i..end); }
                    _ => { let run = bytes[i..end].to_vec(); bytes.splice(i..i, run); }
                }
                if bytes.is_empty() { break; }
            }
            match decode(&bytes, &Limits::default()) {
                Ok((img, _)) => prop_assert!(img.width() > 0 && img.height() > 0),
                Err(reason) => prop_assert!(matches!(reason, RejectReason::CorruptMedia | RejectReason::TooManyPixels), "{reason:?}"),
            }
        }
    }
}
