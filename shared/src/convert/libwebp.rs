//! The few libwebp calls conversion makes, over `libwebp-sys` (libwebp 1.6.0, statically linked).
//! 1.6.0 is the libwebp Pillow bundles, so an image's q85 encoding here is byte for byte what the
//! AnkiCollab plugin makes of it, and the quality floor is the plugin's own output.
//!
//! Every function copies libwebp's output into a `Vec` and frees libwebp's buffers before it
//! returns, on success and failure alike.

use std::ffi::{c_int, c_void, CStr};

use libwebp_sys as sys;

/// Encoder settings: libwebp's defaults, then the fields the caller sets.
pub fn config() -> Option<sys::WebPConfig> {
    let mut config = std::mem::MaybeUninit::<sys::WebPConfig>::uninit();
    // SAFETY: the Internal call initialises every field of `config` when it returns non-zero.
    let ok = unsafe {
        sys::WebPConfigInitInternal(
            config.as_mut_ptr(),
            sys::WebPPreset::WEBP_PRESET_DEFAULT,
            75.0,
            sys::WEBP_ENCODER_ABI_VERSION as c_int,
        )
    };
    // SAFETY: initialised above.
    (ok != 0).then(|| unsafe { config.assume_init() })
}

/// A picture holding a copy of 8-bit RGB(A) pixels in libwebp's ARGB layout, freed on drop.
struct Picture(sys::WebPPicture);

impl Picture {
    fn new(pixels: &[u8], width: u32, height: u32, alpha: bool) -> Result<Self, String> {
        let channels = if alpha { 4 } else { 3 };
        let expected = (width as usize).checked_mul(height as usize).and_then(|n| n.checked_mul(channels));
        if expected != Some(pixels.len()) || width > 16383 || height > 16383 {
            return Err(format!("{width}x{height} does not fit {} bytes or WebP's 16383 px", pixels.len()));
        }
        let mut pic = std::mem::MaybeUninit::<sys::WebPPicture>::uninit();
        // SAFETY: initialises every field when it returns non-zero.
        if unsafe { sys::WebPPictureInitInternal(pic.as_mut_ptr(), sys::WEBP_ENCODER_ABI_VERSION as c_int) } == 0 {
            return Err("libwebp version mismatch".into());
        }
        // SAFETY: initialised above; Picture's drop frees what the import allocates.
        let mut pic = Picture(unsafe { pic.assume_init() });
        pic.0.width = width as c_int;
        pic.0.height = height as c_int;
        // ARGB input, as Pillow gives it: lossy encoding converts to YUV itself.
        pic.0.use_argb = 1;
        let stride = (width as usize * channels) as c_int;
        // SAFETY: `pixels` holds width × height × channels bytes (checked above); the import
        // copies them into memory the picture owns.
        let ok = unsafe {
            if alpha {
                sys::WebPPictureImportRGBA(&mut pic.0, pixels.as_ptr(), stride)
            } else {
                sys::WebPPictureImportRGB(&mut pic.0, pixels.as_ptr(), stride)
            }
        };
        if ok == 0 {
            return Err("libwebp could not import the pixels (out of memory?)".into());
        }
        Ok(pic)
    }
}

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: the picture was initialised by WebPPictureInitInternal; freeing is idempotent.
        unsafe { sys::WebPPictureFree(&mut self.0) }
    }
}

/// One still image, lossy or lossless as `config` says.
pub fn encode(
    pixels: &[u8],
    width: u32,
    height: u32,
    alpha: bool,
    config: &sys::WebPConfig,
) -> Result<Vec<u8>, String> {
    let mut pic = Picture::new(pixels, width, height, alpha)?;
    let mut writer = std::mem::MaybeUninit::<sys::WebPMemoryWriter>::uninit();
    // SAFETY: WebPMemoryWriterInit initialises every field.
    unsafe { sys::WebPMemoryWriterInit(writer.as_mut_ptr()) };
    // SAFETY: initialised above.
    let mut writer = unsafe { writer.assume_init() };
    pic.0.writer = Some(sys::WebPMemoryWrite);
    pic.0.custom_ptr = (&mut writer as *mut sys::WebPMemoryWriter).cast::<c_void>();
    // SAFETY: config and picture are initialised; the writer outlives the call.
    let ok = unsafe { sys::WebPEncode(config, &mut pic.0) };
    let out = if ok != 0 && !writer.mem.is_null() {
        // SAFETY: libwebp wrote `size` bytes at `mem`.
        Ok(unsafe { std::slice::from_raw_parts(writer.mem, writer.size) }.to_vec())
    } else {
        Err(format!("libwebp could not encode: {:?}", pic.0.error_code))
    };
    // SAFETY: frees what WebPMemoryWrite allocated (nothing if it never ran).
    unsafe { sys::WebPMemoryWriterClear(&mut writer) };
    out
}

/// Decoded pixels: RGBA when the file has alpha, else RGB.
pub struct Decoded {
    pub pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub alpha: bool,
}

/// A still WebP (the first frame of an animation is not decoded: callers only decode their own
/// still encodings).
pub fn decode(webp: &[u8]) -> Option<Decoded> {
    let mut features = std::mem::MaybeUninit::<sys::WebPBitstreamFeatures>::uninit();
    // SAFETY: reads at most `webp.len()` bytes; fills `features` when it returns OK.
    let status = unsafe { sys::WebPGetFeatures(webp.as_ptr(), webp.len(), features.as_mut_ptr()) };
    if status != sys::VP8StatusCode::VP8_STATUS_OK {
        return None;
    }
    // SAFETY: initialised on VP8_STATUS_OK.
    let alpha = unsafe { features.assume_init() }.has_alpha != 0;
    let (mut w, mut h): (c_int, c_int) = (0, 0);
    // SAFETY: returns null or a buffer of w × h × channels bytes that we free below.
    let ptr = unsafe {
        if alpha {
            sys::WebPDecodeRGBA(webp.as_ptr(), webp.len(), &mut w, &mut h)
        } else {
            sys::WebPDecodeRGB(webp.as_ptr(), webp.len(), &mut w, &mut h)
        }
    };
    if ptr.is_null() {
        return None;
    }
    let len = w as usize * h as usize * if alpha { 4 } else { 3 };
    // SAFETY: libwebp allocated `len` bytes at `ptr`; copied, then freed with libwebp's allocator.
    let pixels = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
    unsafe { sys::WebPFree(ptr.cast::<c_void>()) };
    Some(Decoded { pixels, width: w as u32, height: h as u32, alpha })
}

/// Frames of RGBA pixels on one canvas, each shown from its timestamp (ms) until the next; the
/// last until `end_ms`. Loops forever.
pub fn encode_animation<'a>(
    frames: impl IntoIterator<Item = (&'a [u8], i32)>,
    width: u32,
    height: u32,
    end_ms: i32,
    config: &sys::WebPConfig,
) -> Result<Vec<u8>, String> {
    let mut options = std::mem::MaybeUninit::<sys::WebPAnimEncoderOptions>::uninit();
    // SAFETY: initialises every field when it returns non-zero.
    if unsafe { sys::WebPAnimEncoderOptionsInitInternal(options.as_mut_ptr(), sys::WEBP_MUX_ABI_VERSION as c_int) } == 0
    {
        return Err("libwebp mux version mismatch".into());
    }
    // SAFETY: initialised above.
    let mut options = unsafe { options.assume_init() };
    options.anim_params.loop_count = 0;
    // Transparent, as GIF and APNG canvases start.
    options.anim_params.bgcolor = 0;
    // SAFETY: options initialised; the encoder is deleted by `Anim`'s drop.
    let enc = unsafe {
        sys::WebPAnimEncoderNewInternal(width as c_int, height as c_int, &options, sys::WEBP_MUX_ABI_VERSION as c_int)
    };
    if enc.is_null() {
        return Err("libwebp could not start an animation (out of memory?)".into());
    }
    struct Anim(*mut sys::WebPAnimEncoder);
    impl Drop for Anim {
        fn drop(&mut self) {
            // SAFETY: created by WebPAnimEncoderNewInternal, deleted once.
            unsafe { sys::WebPAnimEncoderDelete(self.0) }
        }
    }
    let enc = Anim(enc);
    let error = |enc: &Anim| {
        // SAFETY: returns a NUL-terminated string owned by the encoder, or null.
        let p = unsafe { sys::WebPAnimEncoderGetError(enc.0) };
        if p.is_null() {
            "unknown error".to_owned()
        } else {
            // SAFETY: non-null and NUL-terminated, alive while `enc` is.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    for (rgba, timestamp) in frames {
        let mut pic = Picture::new(rgba, width, height, true)?;
        // SAFETY: the encoder copies what it needs from the picture before returning.
        if unsafe { sys::WebPAnimEncoderAdd(enc.0, &mut pic.0, timestamp, config) } == 0 {
            return Err(format!("libwebp could not add a frame: {}", error(&enc)));
        }
    }
    // SAFETY: a null frame marks the end; its timestamp is the last frame's end.
    if unsafe { sys::WebPAnimEncoderAdd(enc.0, std::ptr::null_mut(), end_ms, std::ptr::null()) } == 0 {
        return Err(format!("libwebp could not end the animation: {}", error(&enc)));
    }
    let mut data = sys::WebPData::default();
    // SAFETY: on success `data` holds a buffer libwebp allocated, freed by WebPDataClear.
    if unsafe { sys::WebPAnimEncoderAssemble(enc.0, &mut data) } == 0 {
        return Err(format!("libwebp could not assemble the animation: {}", error(&enc)));
    }
    // SAFETY: `size` bytes at `bytes`, then freed.
    let out = unsafe { std::slice::from_raw_parts(data.bytes, data.size) }.to_vec();
    unsafe { sys::WebPDataClear(&mut data) };
    Ok(out)
}
