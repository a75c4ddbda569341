//! Run process-upload's image path (`shared::convert::process_image`: decode → orient → WebP →
//! thumbnail) on files and print one JSON line each. Used by compare-conversion.py, which runs
//! one process per image so that peak RSS is per image.
//!
//! usage: convert-image [--repeat N] [--out DIR] FILE...

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shared::convert::{process_image, Encoding};
use shared::policy::Limits;
use shared::sniff::{sniff, Sniffed};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut repeat, mut out_dir, mut files) = (1usize, None::<PathBuf>, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().ok_or("--repeat N")?.parse()?,
            "--out" => out_dir = Some(args.next().ok_or("--out DIR")?.into()),
            _ => files.push(PathBuf::from(a)),
        }
    }
    let limits = Limits::default();
    for path in files {
        let bytes = std::fs::read(&path)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Sniffed::Image(kind) = sniff(&bytes) else {
            println!(r#"{{"file": {}, "error": "not an image"}}"#, json_str(&name));
            continue;
        };
        // Best of `repeat`: the machine is shared, and the minimum is the least disturbed run.
        let mut best = Duration::MAX;
        let mut result = None;
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            let r = process_image(kind, &bytes, &limits);
            best = best.min(t.elapsed());
            result = Some(r);
        }
        match result.ok_or("no run")? {
            Err(reason) => {
                println!(r#"{{"file": {}, "error": {}}}"#, json_str(&name), json_str(&format!("{reason:?}")))
            }
            Ok(img) => {
                if let Some(dir) = &out_dir {
                    std::fs::write(dir.join(format!("{name}.out")), &img.bytes)?;
                    std::fs::write(dir.join(format!("{name}.thumb.webp")), &img.thumbnail)?;
                }
                let w = img.webp;
                println!(
                    r#"{{"file": {}, "input_bytes": {}, "bytes": {}, "thumbnail_bytes": {}, "content_type": {}, "encoding": "{}", "width": {}, "height": {}, "secs": {}, "peak_rss_kib": {}, "webp": {{"lossless": {}, "quality": {}, "method": {}}}}}"#,
                    json_str(&name),
                    bytes.len(),
                    img.bytes.len(),
                    img.thumbnail.len(),
                    json_str(img.content_type),
                    encoding(img.encoding),
                    img.width,
                    img.height,
                    best.as_secs_f64(),
                    peak_rss_kib().map_or("null".into(), |k| k.to_string()),
                    w.lossless,
                    w.quality,
                    w.method,
                );
            }
        }
    }
    Ok(())
}

/// A JSON string literal (no serde here: this crate keeps to the workspace's lock as it is).
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn encoding(e: Encoding) -> &'static str {
    match e {
        Encoding::Lossy => "lossy",
        Encoding::Lossless => "lossless",
        Encoding::Original => "original",
        Encoding::Animated => "animated",
    }
}

/// VmHWM: this process's peak resident set so far (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string(Path::new("/proc/self/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
