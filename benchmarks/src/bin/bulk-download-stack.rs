//! Handing out URLs for a whole 10,000-file deck on the local stack: the requests a client needs
//! and the handler's CPU time, storage latency left out.
//!
//! The deck is seeded into the stack's DynamoDB (moto), then fetched page by page through
//! `shared::api::handle`, the entry point presign-download runs on Lambda (token check, JSON,
//! deck index query, batched record reads, signing). Everything runs on one
//! thread, so the process's CPU time (getrusage) is the handler's work, SDK serialisation and
//! response parsing included, while time spent waiting for DynamoDB is not.
//!
//!     scripts/up --no-demo && set -a && source .local/stack.env && set +a
//!     cargo run --release -p benchmarks --bin bulk-download-stack [-- FILES [RUNS]]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use lambda_http::{Body, Request};
use shared::api::{handle, Route};
use shared::hash::Sha256Hash;
use shared::model::{MediaRecord, MediaStatus};
use shared::servable::ReadyCache;
use shared::App;

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Writes the deck's index items and ready media records straight into DynamoDB, 25 per
/// BatchWriteItem. (Through `set_note` the items would be written by transactions, which moto
/// answers by deep-copying the tables each time: hours, and tens of GB, for 10,000 files.)
async fn seed(app: &App, deck: &str, files: usize) -> anyhow::Result<()> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let now = "2026-11-24T00:00:00Z";
    let mut writes: Vec<(String, WriteRequest)> = Vec::with_capacity(files * 2);
    for i in 0..files {
        let hash = Sha256Hash::of(format!("{deck}/{i}").as_bytes());
        let mut record = MediaRecord::new(hash, MediaStatus::Ready);
        record.stored_key = Some(app.config.keys.media(&hash));
        record.content_type = Some("image/webp".into());
        (record.size, record.stored_size, record.width, record.height) = (Some(1000), Some(500), Some(64), Some(64));
        record.stored_hash = Some(hash);
        record.ref_count = 1;
        record.updated_at = Some(now.into());
        let index = serde_json::json!({
            "deck": deck, "filename": format!("file-{i:05}.png"), "hash": hash.to_hex(), "notes": 1, "updated_at": now,
        });
        for (table, item) in [
            (&app.config.media_table, serde_dynamo::to_item(&record)?),
            (&app.config.deck_files_table, serde_dynamo::to_item(&index)?),
        ] {
            let put = PutRequest::builder().set_item(Some(item)).build()?;
            writes.push((table.clone(), WriteRequest::builder().put_request(put).build()));
        }
    }
    for chunk in writes.chunks(25) {
        let mut items: HashMap<String, Vec<WriteRequest>> = HashMap::new();
        for (table, write) in chunk {
            items.entry(table.clone()).or_default().push(write.clone());
        }
        let mut pending = Some(items);
        while let Some(items) = pending.take().filter(|i| !i.is_empty()) {
            let resp = dynamo.batch_write_item().set_request_items(Some(items)).send().await?;
            pending = resp.unprocessed_items;
        }
    }
    Ok(())
}

struct Run {
    requests: usize,
    urls: usize,
    response_bytes: usize,
    /// What the answers would have been uncompressed.
    json_bytes: usize,
    cpu: Duration,
    wall: Duration,
}

/// The whole deck page by page, asking for gzip or not. Only the handler's own CPU is counted
/// (the client's gunzip and parsing here are not).
async fn whole_deck(app: &App, token: &str, deck: &str, gzip: bool) -> anyhow::Result<Run> {
    let wall0 = Instant::now();
    let (mut requests, mut urls, mut response_bytes, mut json_bytes, mut cpu) = (0, 0, 0, 0, Duration::ZERO);
    let mut cursor: Option<String> = None;
    loop {
        let body = serde_json::json!({"deck": deck, "cursor": cursor}).to_string();
        let mut req = http::Request::builder()
            .method("POST")
            .uri("/v1/downloads")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        if gzip {
            req = req.header("accept-encoding", "gzip, deflate");
        }
        let req = req.body(Body::Text(body))?;
        let cpu0 = cpu_time();
        let resp = handle(app, Request::from(req), &[Route::Downloads]).await;
        cpu += cpu_time() - cpu0;
        requests += 1;
        let bytes = resp.body().as_ref();
        response_bytes += bytes.len();
        let zipped = resp.headers().get("content-encoding").is_some_and(|v| v == "gzip");
        ensure!(zipped == gzip, "page {requests}: gzip {zipped}, asked {gzip}");
        let text = if zipped {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut text)?;
            text
        } else {
            bytes.to_vec()
        };
        json_bytes += text.len();
        ensure!(resp.status() == 200, "page {requests}: {}", String::from_utf8_lossy(&text));
        let page: serde_json::Value = serde_json::from_slice(&text)?;
        urls += page["files"].as_array().map_or(0, Vec::len);
        ensure!(page["unavailable"] == serde_json::json!([]), "unavailable files: {}", page["unavailable"]);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    Ok(Run { requests, urls, response_bytes, json_bytes, cpu, wall: wall0.elapsed() })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let files: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut app = App::from_env().await.context("the local stack's environment (.local/stack.env)")?;
        // Production's page size; the local stack sets a smaller one for its tests.
        app.config.download_page_size = 2000;
        let secret = app.config.jwt_secret.as_ref().map(|s| s.expose().to_owned()).context("JWT_SECRET")?;
        let token = shared::auth::mint(secret.as_bytes(), "bench", "download", &[], 3600);
        let deck = format!("bulk-{files}");
        let seeded = Instant::now();
        seed(&app, &deck, files).await?;
        eprintln!("seeded {files} ready files into deck {deck} in {:.1} s", seeded.elapsed().as_secs_f64());

        // Each variant of the answer, side by side in every run: S3 or CloudFront URLs, plain
        // or gzipped (issue 39: bytes ≤ 0.30× with S3 URLs, ≤ 0.20× with CloudFront's, CPU + ≤ 10 %).
        let cdn = || {
            shared::cdn::CdnSigner::new(
                "https://d111111abcdef8.cloudfront.net",
                "K2JCJMDEHXQW5F",
                include_str!("../../../shared/testdata/cdn-test-key.pem"),
            )
        };
        println!("| run | URLs | requests | URLs | response bytes | uncompressed | handler CPU ms | wall ms (incl. DynamoDB) |");
        println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        let mut best: HashMap<(&str, bool), Run> = HashMap::new();
        // Part 1's comparison is of answers built from the records, as they were then.
        app.ready = ReadyCache::off();
        for run in 1..=runs {
            for (signer, gzip) in [("S3", false), ("S3", true), ("CloudFront", false), ("CloudFront", true)] {
                app.cdn = if signer == "CloudFront" { Some(cdn()?) } else { None };
                let r = whole_deck(&app, &token, &deck, gzip).await?;
                ensure!(r.urls == files, "{} URLs for {files} files", r.urls);
                println!(
                    "| {run} | {signer}{} | {} | {} | {} | {} | {:.1} | {:.1} |",
                    if gzip { ", gzip" } else { "" },
                    r.requests,
                    r.urls,
                    r.response_bytes,
                    r.json_bytes,
                    r.cpu.as_secs_f64() * 1e3,
                    r.wall.as_secs_f64() * 1e3
                );
                if best.get(&(signer, gzip)).is_none_or(|b| r.cpu < b.cpu) {
                    best.insert((signer, gzip), r);
                }
            }
        }
        app.cdn = None;
        for signer in ["S3", "CloudFront"] {
            let (plain, zipped) = (&best[&(signer, false)], &best[&(signer, true)]);
            println!(
                "{signer} URLs, best of {runs}: plain {:.1} ms, {} bytes; gzip {:.1} ms, {} bytes: bytes {:.3}×, CPU {:+.1} %",
                plain.cpu.as_secs_f64() * 1e3,
                plain.response_bytes,
                zipped.cpu.as_secs_f64() * 1e3,
                zipped.response_bytes,
                zipped.response_bytes as f64 / plain.response_bytes as f64,
                (zipped.cpu.as_secs_f64() / plain.cpu.as_secs_f64() - 1.0) * 100.0
            );
        }

        // Issue 39, part 2: the whole deck against signing its URLs alone, side by side in each
        // run: with no memory of ready records, for the first subscriber an instance serves (it
        // reads and remembers them) and for the next (answered from memory). Gzip and S3 URLs, as
        // the client asks by default.
        println!();
        println!("| run | signing 10,000 URLs alone, ms | no memory, ms | first subscriber, ms | next subscriber, ms |");
        println!("| ---: | ---: | ---: | ---: | ---: |");
        let keys: Vec<String> =
            (0..files).map(|i| app.config.keys.media(&Sha256Hash::of(format!("{deck}/{i}").as_bytes()))).collect();
        let mut part2 = [Duration::MAX; 4];
        for run in 1..=runs {
            let cpu0 = cpu_time();
            let now = time::OffsetDateTime::now_utc();
            let signer = app.url_signer().for_answer(&[app.config.keys.media_prefix.as_str()], now)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let signed = keys.iter().filter_map(|k| signer.url(k)).count();
            let signing = cpu_time() - cpu0;
            ensure!(signed == files, "{signed} URLs signed");
            app.ready = ReadyCache::off();
            let off = whole_deck(&app, &token, &deck, true).await?;
            app.ready = ReadyCache::new(3600, 50_000);
            let first = whole_deck(&app, &token, &deck, true).await?;
            ensure!(app.ready.len() == files, "{} remembered", app.ready.len());
            let next = whole_deck(&app, &token, &deck, true).await?;
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "| {run} | {:.1} | {:.1} | {:.1} | {:.1} |",
                ms(signing),
                ms(off.cpu),
                ms(first.cpu),
                ms(next.cpu)
            );
            for (b, d) in part2.iter_mut().zip([signing, off.cpu, first.cpu, next.cpu]) {
                *b = (*b).min(d);
            }
        }
        let [signing, off, first, next] = part2.map(|d| d.as_secs_f64() * 1e3);
        println!(
            "best of {runs}: signing {signing:.1} ms; whole deck, no memory {off:.1} ms ({:.1}×), first subscriber {first:.1} ms ({:.1}×), next subscriber {next:.1} ms ({:.1}×) of signing",
            off / signing,
            first / signing,
            next / signing
        );
        app.ready = ReadyCache::off();

        // Where it goes: the storage reads alone (SDK requests and response parsing).
        let (mut index_cpu, mut records_cpu) = (Duration::MAX, Duration::MAX);
        for _ in 0..runs {
            let (mut after, mut hashes, cpu0) = (None, Vec::new(), cpu_time());
            loop {
                let page = app.decks.page(&deck, after.as_deref(), app.config.download_page_size).await?;
                hashes.extend(page.entries.iter().map(|e| e.hash));
                match page.next_after {
                    Some(a) => after = Some(a),
                    None => break,
                }
            }
            let cpu1 = cpu_time();
            let records = app.media.get_many(&hashes).await?;
            ensure!(records.len() == files, "{} records", records.len());
            index_cpu = index_cpu.min(cpu1 - cpu0);
            records_cpu = records_cpu.min(cpu_time() - cpu1);
        }
        println!(
            "of which, best of {runs}: deck index pages {:.1} ms, {files} media records {:.1} ms",
            index_cpu.as_secs_f64() * 1e3,
            records_cpu.as_secs_f64() * 1e3
        );
        Ok(())
    })
}
