//! The import of AnkiCollab's media against its ceiling, side by side in one run on the local
//! stack (`make up`): N small files in a source bucket and a source database of today's tables.
//!
//!   cargo build --release -p legacy-import -p benchmarks
//!   cargo run --release -p benchmarks --bin import-legacy-stack -- [N=10000] [PARALLEL=8]
//!
//! 1. ceiling: a plain parallel copy of the same objects between two buckets (GET, then PUT);
//! 2. processing: the upload processing of those files alone (`process::content`, no storage),
//!    as parallel as the machine allows;
//! 3. the import itself (`import-legacy`, release build), its wall time and peak RSS.
//!
//! Target (issue 34): import ≤ 2 × ceiling + processing, peak RSS < 200 MB.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio_postgres::NoTls;

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: source .local/stack.env"))
}

/// A small, valid, distinct PNG (what most deck images are).
fn png(seed: u64) -> Vec<u8> {
    let img = image::RgbImage::from_fn(24, 24, |x, y| {
        let v = seed.wrapping_mul(2_654_435_761).wrapping_add((y * 97 + x * 31) as u64);
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encoding a PNG in memory");
    out.into_inner()
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let parallel: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(8);
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let (source, scratch) = (format!("bench-legacy-{stamp}"), format!("bench-copy-{stamp}"));
    for b in [&source, &scratch] {
        s3.create_bucket().bucket(b).send().await?;
    }

    // The source database: today's tables, one deck, one note per file.
    let url = var("DATABASE_URL")?;
    let db_name = format!("sync_import_bench_{stamp}");
    let (admin, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(conn);
    admin.batch_execute(&format!("CREATE DATABASE {db_name}")).await?;
    let src_url = format!("{}/{db_name}", url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url));
    let (db, conn) = tokio_postgres::connect(&src_url, NoTls).await?;
    tokio::spawn(conn);
    db.batch_execute(include_str!("../../../backend-kit/tests/ankicollab_today.sql")).await?;
    let deck: i64 = db
        .query_one(
            "INSERT INTO anki.decks (name, human_hash) VALUES ('bench', $1) RETURNING id",
            &[&format!("bench-{stamp}")],
        )
        .await?
        .get(0);
    eprintln!("seeding {n} files…");
    let files: Vec<Vec<u8>> = (0..n).map(|i| png(stamp as u64 * 1_000_003 + i as u64)).collect();
    let bytes: u64 = files.iter().map(|f| f.len() as u64).sum();
    let md5s: Vec<String> = files.iter().map(|f| md5_hex(f)).collect();
    stream::iter(files.iter().zip(&md5s))
        .map(|(f, m)| {
            let (s3, source) = (&s3, &source);
            async move {
                s3.put_object()
                    .bucket(source)
                    .key(format!("{}/{m}", &m[..2]))
                    .body(ByteStream::from(f.clone()))
                    .send()
                    .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    db.execute(
        "WITH notes AS (
            INSERT INTO anki.notes (guid, deck, reviewed) SELECT 'g' || i, $1, true FROM generate_series(1, $2::int) i RETURNING id, guid
         ), files AS (
            INSERT INTO anki.media_files (hash, file_size) SELECT unnest($3::text[]), 1 RETURNING id, hash
         ), numbered AS (SELECT id, row_number() OVER (ORDER BY id) AS i FROM files)
         INSERT INTO anki.media_references (media_id, note_id, file_name)
         SELECT f.id, n.id, 'f' || f.i || '.png' FROM numbered f JOIN notes n ON n.guid = 'g' || f.i",
        &[&deck, &(n as i32), &md5s],
    )
    .await?;

    // 1. The ceiling: a plain parallel copy between the buckets.
    let started = Instant::now();
    stream::iter(md5s.iter())
        .map(|m| {
            let (s3, source, scratch) = (&s3, &source, &scratch);
            async move {
                let key = format!("{}/{m}", &m[..2]);
                let body = s3.get_object().bucket(source).key(&key).send().await?.body.collect().await?.into_bytes();
                s3.put_object().bucket(scratch).key(&key).body(ByteStream::from(body)).send().await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;
    let ceiling = started.elapsed().as_secs_f64();

    // 2. Processing alone.
    let limits = Arc::new(shared::config::Config::from_env()?.limits);
    let started = Instant::now();
    stream::iter(files.into_iter())
        .map(|f| {
            let limits = limits.clone();
            tokio::task::spawn_blocking(move || shared::process::content(f, &limits).map(|_| ()))
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;
    let processing = started.elapsed().as_secs_f64();

    // 3. The import (release build), under GNU time for its peak RSS.
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let report = format!("/tmp/import-bench-{stamp}.jsonl");
    let started = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(format!("{target}/release/import-legacy"))
        .args(["--parallel", &parallel.to_string(), "--report", &report])
        .env("SOURCE_DATABASE_URL", &src_url)
        .env("SOURCE_BUCKET", &source)
        .env("SOURCE_ENDPOINT", var("AWS_ENDPOINT_URL_S3")?)
        .env("MEDIA_API_URL", var("API_URL")?)
        .env("RUST_LOG", "warn")
        .output()?;
    let import = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss_kb: f64 = stderr.lines().last().and_then(|l| l.trim().parse().ok()).context("GNU time's peak RSS")?;
    let summary = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "the import failed: {summary} {stderr}");

    let budget = 2.0 * ceiling + processing;
    println!("files: {n} ({:.1} MB), parallel {parallel}", bytes as f64 / 1e6);
    println!("import: {}", summary.trim());
    println!("| step | seconds | files/s |");
    println!("| --- | --- | --- |");
    for (what, s) in [
        ("ceiling (parallel GET+PUT between buckets)", ceiling),
        ("processing alone", processing),
        ("import-legacy", import),
    ] {
        println!("| {what} | {s:.1} | {:.0} |", n as f64 / s);
    }
    println!("import / (2 × ceiling + processing) = {:.2} (target ≤ 1.00)", import / budget);
    println!("import peak RSS: {:.0} MB (target < 200 MB)", rss_kb / 1024.0);
    Ok(())
}
