//! Run process-upload's audio path (`shared::audio::to_mp3`: decode WAV/AIFF/FLAC with symphonia,
//! encode MP3 with LAME at -V 4) on files and print one JSON line each. Used by compare-audio.py.
//!
//! usage: encode-audio [--repeat N] [--out DIR] FILE...

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use shared::audio::{duration_ms, to_mp3};
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
    for path in files {
        let bytes = std::fs::read(&path)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Sniffed::Audio(kind) = sniff(&bytes) else {
            println!("{}", json!({"file": name, "error": "not audio"}));
            continue;
        };
        let declared = duration_ms(kind, &bytes)?;
        // Best of `repeat`: the machine is shared, and the minimum is the least disturbed run.
        let (mut best, mut result) = (Duration::MAX, None);
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            let r = to_mp3(kind, &bytes, declared);
            best = best.min(t.elapsed());
            result = Some(r);
        }
        match result.ok_or("no run")? {
            Err(e) => println!("{}", json!({"file": name, "error": e.to_string()})),
            Ok(None) => println!("{}", json!({"file": name, "input_bytes": bytes.len(), "kept": true})),
            Ok(Some(mp3)) => {
                if let Some(dir) = &out_dir {
                    std::fs::write(dir.join(format!("{name}.mp3")), &mp3.bytes)?;
                }
                println!(
                    "{}",
                    json!({
                        "file": name,
                        "input_bytes": bytes.len(),
                        "bytes": mp3.bytes.len(),
                        "duration_ms": declared,
                        "sample_rate": mp3.sample_rate,
                        "channels": mp3.channels,
                        "seconds": best.as_secs_f64(),
                    })
                );
            }
        }
    }
    Ok(())
}
