//! The core pipeline end to end on the local stack: pre-signed upload → process-upload →
//! pre-signed download, with the corpus's real and hostile files.

use std::collections::HashMap;
use std::io::Cursor;

use anyhow::Context;
use futures::future::join_all;
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageEncoder, ImageReader};
use integration_tests::{app_with_objects, sha256_hex, unique_bytes, unique_png, Stack};
use serde_json::{json, Value};

/// Decode as a viewer would: the first frame, upright.
fn decode_upright(bytes: &[u8]) -> Option<DynamicImage> {
    let mut decoder = ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?.into_decoder().ok()?;
    let orientation = decoder.orientation().ok()?;
    let mut img = DynamicImage::from_decoder(decoder).ok()?;
    img.apply_orientation(orientation);
    Some(img)
}

/// Mean absolute difference of two pictures as seen on a white page, on a small common grid, 0..255.
/// (Colours under fully transparent pixels are invisible, and the encoder may change them.)
fn difference(a: &DynamicImage, b: &DynamicImage) -> f64 {
    let on_white = |img: &DynamicImage| -> Vec<f64> {
        let small = img.resize_exact(32, 32, image::imageops::FilterType::Triangle).to_rgba8();
        small
            .pixels()
            .flat_map(|p| {
                let a = f64::from(p.0[3]) / 255.0;
                (0..3).map(move |c| f64::from(p.0[c]) * a + 255.0 * (1.0 - a))
            })
            .collect()
    };
    let (a, b) = (on_white(a), on_white(b));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
}

fn frame_count(bytes: &[u8]) -> usize {
    if bytes.starts_with(b"GIF") {
        let d = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).unwrap();
        d.into_frames().count()
    } else if bytes.starts_with(b"RIFF") {
        let d = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).unwrap();
        if d.has_animation() {
            d.into_frames().count()
        } else {
            1
        }
    } else {
        1
    }
}

fn kind_of(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(_, e)| e)
}

#[tokio::test]
async fn every_real_file_round_trips() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let files = stack.corpus_files("real")?;
    for (_, bytes) in &files {
        stack.forget(&sha256_hex(bytes)).await?;
    }
    let deck = format!("roundtrip-{}", std::process::id());
    let list: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let items = stack.request_uploads(&deck, &list).await?;
    assert_eq!(items.len(), files.len());
    let stack = &stack;
    let puts = files.iter().zip(&items).map(|((name, bytes), item)| async move {
        assert_eq!(item["status"], "upload", "{name}: {item}");
        assert_eq!(item["hash"], sha256_hex(bytes));
        assert_eq!(stack.put_upload(item, bytes.clone()).await.unwrap(), 200, "{name}");
    });
    join_all(puts).await;

    let mut savings: HashMap<&str, (u64, u64, usize)> = HashMap::new();
    let mut converted = Vec::new();
    for (name, bytes) in &files {
        let hash = sha256_hex(bytes);
        let info = stack.wait_processed(&hash).await?;
        assert_eq!(info["status"], "ready", "{name}: {info}");
        let stored_size = info["stored_size"].as_u64().unwrap();
        assert_eq!(info["size"].as_u64(), Some(bytes.len() as u64));
        let entry = savings.entry(kind_of(name)).or_default();
        entry.0 += bytes.len() as u64;
        entry.1 += stored_size;
        entry.2 += 1;
        // Nothing left under the upload prefix (it goes right after the record turns ready).
        stack.wait_gone(&format!("uploads/{hash}")).await?;
    }

    // The backend says which note uses them; downloads resolve through those references.
    let media: Vec<Value> = files.iter().map(|(n, b)| json!({"filename": n, "hash": sha256_hex(b)})).collect();
    let (status, answer) = stack
        .post(
            "/v1/references",
            &stack.token("references"),
            json!({"deck": deck, "notes": [{"note_id": "1", "media": media}]}),
        )
        .await?;
    assert_eq!((status, answer["added"].as_u64()), (200, Some(files.len() as u64)), "{answer}");

    // Download everything through the API, by filename.
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let (status, answer) =
        stack.post("/v1/downloads", &stack.token("download"), json!({"deck": deck, "filenames": names})).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["unavailable"], json!([]));
    let by_name: HashMap<&str, &Value> =
        answer["files"].as_array().unwrap().iter().map(|f| (f["filename"].as_str().unwrap(), f)).collect();
    for (name, original) in &files {
        let entry = by_name[name.as_str()];
        let resp = stack.http.get(entry["url"].as_str().unwrap()).send().await?;
        assert_eq!(resp.status(), 200, "{name}");
        let content_type = resp.headers()["content-type"].to_str()?.to_string();
        assert_eq!(resp.headers()["cache-control"], "public, max-age=31536000, immutable");
        let stored = resp.bytes().await?.to_vec();
        assert_eq!(content_type, entry["content_type"], "{name}");
        assert_eq!(stored.len() as u64, entry["size"].as_u64().unwrap(), "{name}");
        assert_eq!(
            sha256_hex(&stored),
            entry["stored_hash"].as_str().unwrap(),
            "{name}: stored_hash names the bytes served"
        );
        assert!(stored.len() <= original.len(), "{name}: stored {} > original {}", stored.len(), original.len());

        if content_type.starts_with("audio/") {
            // Stored as its audio only (tags and anything else gone): it plays the same.
            let ext = if content_type == "audio/mpeg" { "mp3" } else { "ogg" };
            let (want, got) =
                (integration_tests::decode_audio(original, ext)?, integration_tests::decode_audio(&stored, ext)?);
            assert!(!want.is_empty() && want == got, "{name}: decodes differently");
            let info = stack.wait_processed(entry["hash"].as_str().unwrap()).await?;
            let ms = info["duration_ms"].as_u64().with_context(|| format!("{name}: no duration: {info}"))?;
            assert!(0 < ms && ms < 300_000, "{name}: {ms} ms");
            continue;
        }
        assert!(content_type.starts_with("image/"), "{name}: {content_type}");
        let got = decode_upright(&stored).unwrap_or_else(|| panic!("{name}: stored image does not decode"));
        match decode_upright(original) {
            Some(want) => {
                assert_eq!((got.width(), got.height()), (want.width(), want.height()), "{name}: dimensions");
                let diff = difference(&want, &got);
                assert!(diff < 6.0, "{name}: looks different from the original (mean difference {diff:.1})");
            }
            // The float TIFF, which only our own fallback decodes: 10x10 RGB.
            None => assert_eq!((got.width(), got.height()), (10, 10), "{name}"),
        }
        assert!(!stored.windows(6).any(|w| w == b"Exif\0\0"), "{name}: EXIF survived");
        if name.starts_with("animated") || name == "no_time_for_that_tiny.gif" {
            assert_eq!(frame_count(&stored), frame_count(original), "{name}: animation lost");
        }
        if name == "phone-exif-rotated-1.jpg" {
            // Orientation 6: the stored picture is the upright one, taller than wide, no GPS.
            let raw = ImageReader::new(Cursor::new(&stored)).with_guessed_format()?.decode()?;
            assert!(raw.height() > raw.width(), "{name}: not rotated upright");
            assert!(!stored.windows(3).any(|w| w == b"GPS"), "{name}: GPS survived");
        }
        if stored != *original {
            converted.push((name.clone(), stored));
        }
    }

    // Uploading the same files again needs nothing.
    let again = stack.request_uploads(&deck, &list).await?;
    assert!(again.iter().all(|i| i["status"] == "exists"), "{again:?}");
    // Neither does uploading a converted file someone downloaded.
    let downloaded: Vec<(&str, &[u8])> = converted.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let again = stack.request_uploads(&deck, &downloaded).await?;
    assert!(again.iter().all(|i| i["status"] == "exists"), "{again:?}");

    let mut kinds: Vec<_> = savings.into_iter().collect();
    kinds.sort();
    println!("size savings on ../shared/corpus/real:");
    for (kind, (before, after, n)) in kinds {
        println!(
            "  {kind:>5}: {n:>2} files {before:>9} -> {after:>9} bytes ({:.1}% saved)",
            100.0 * (1.0 - after as f64 / before as f64)
        );
    }
    Ok(())
}

#[tokio::test]
async fn hostile_files_are_refused_and_leave_nothing() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let deck = format!("hostile-{}", std::process::id());
    let expected: HashMap<&str, &str> = HashMap::from([
        ("bomb-20001x20001.png", "too_many_pixels"),
        ("elf-named-as.gif", "unsupported_type"),
        ("empty.png", "empty_file"),
        ("html-named-as.jpg", "unsupported_type"),
        ("huge-dimensions-header.jpg", "too_many_pixels"),
        ("polyglot-jpeg-html.jpg", "accepted"),
        ("random-bytes.webp", "unsupported_type"),
        // SVG is accepted once sanitised: stored inert, as image/svg+xml, whatever its name.
        ("svg-named-as.png", "accepted"),
        ("svg-with-script.svg", "accepted"),
        ("truncated.jpg", "corrupt_media"),
        ("zip-named-as.mp3", "unsupported_type"),
    ]);
    let files = stack.corpus_files("hostile")?;
    assert_eq!(files.len(), expected.len(), "a hostile file without an expectation");
    for (_, bytes) in &files {
        stack.forget(&sha256_hex(bytes)).await?;
    }
    let list: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let items = stack.request_uploads(&deck, &list).await?;
    for ((name, bytes), item) in files.iter().zip(&items) {
        let hash = sha256_hex(bytes);
        let want = expected[name.as_str()];
        let reason = if item["status"] == "rejected" {
            // Refused before any upload: nothing was recorded or stored.
            assert!(stack.record(&hash).await?.is_none(), "{name}");
            item["reason"].as_str().unwrap().to_string()
        } else {
            assert_eq!(item["status"], "upload", "{name}: {item}");
            assert_eq!(stack.put_upload(item, bytes.clone()).await?, 200, "{name}");
            let info = stack.wait_processed(&hash).await?;
            if info["status"] == "ready" {
                "accepted".into()
            } else {
                assert_eq!(info["status"], "rejected", "{name}: {info}");
                info["reason"].as_str().unwrap().to_string()
            }
        };
        assert_eq!(reason, want, "{name}");
        stack.wait_gone(&format!("uploads/{hash}")).await?;
        let stored = stack.object(&format!("media/{hash}")).await?;
        if want == "accepted" {
            // The polyglot re-encoded, the SVGs sanitised: no trace of their active payloads.
            let (body, meta) = stored.expect("accepted file is stored");
            let expected_type = if name.contains("svg") { "image/svg+xml" } else { "image/webp" };
            assert_eq!(meta["content-type"], expected_type, "{name}");
            let lower = String::from_utf8_lossy(&body).to_lowercase();
            for payload in ["<html", "<script", "onload", "alert("] {
                assert!(!lower.contains(payload), "{name}: {payload} survived");
            }
            assert!(stack.object(&format!("thumbs/{hash}.webp")).await?.is_some(), "{name}: no thumbnail");
        } else {
            assert!(stored.is_none(), "{name}: stored despite rejection");
            assert!(stack.object(&format!("thumbs/{hash}.webp")).await?.is_none(), "{name}");
        }
    }
    // Nothing crashed: the gateway still answers.
    let resp = stack.http.get(format!("{}/local/health", stack.api)).send().await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}

#[tokio::test]
async fn storage_refuses_wrong_bodies_and_expired_urls() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let body = unique_png();
    let hash = sha256_hex(&body);
    let items = stack.request_uploads("signatures", &[("sig.png", &body)]).await?;
    let item = &items[0];
    assert_eq!(item["status"], "upload");
    let url = item["url"].as_str().unwrap();

    // Same length, other bytes: the signed checksum does not match.
    let mut other = body.clone();
    other[100] ^= 0xFF;
    let status = stack.put_upload(item, other).await?;
    assert_eq!(status, 400, "wrong body must be refused (BadDigest)");
    // Another length: the signed content-length does not match.
    let mut longer = body.clone();
    longer.push(0);
    let resp = stack
        .http
        .put(url)
        .header("content-type", "application/octet-stream")
        .header("x-amz-checksum-sha256", item["headers"]["x-amz-checksum-sha256"].as_str().unwrap())
        .body(longer)
        .send()
        .await?;
    assert_eq!(resp.status(), 403, "wrong length must be refused");
    // Without the checksum header.
    let resp = stack.http.put(url).header("content-type", "application/octet-stream").body(body.clone()).send().await?;
    assert_eq!(resp.status(), 403, "missing checksum header must be refused");
    // A tampered signature: its last hex digit changed.
    let last = if url.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &url[..url.len() - 1]);
    let mut bad = item.clone();
    bad["url"] = json!(tampered);
    assert_eq!(stack.put_upload(&bad, body.clone()).await?, 403);
    // The URL pointed at another key (a path the signature does not cover).
    let other = sha256_hex(&unique_bytes(16));
    let mut moved = item.clone();
    moved["url"] = json!(url.replace(&format!("uploads/{hash}"), &format!("uploads/{other}")));
    assert_ne!(moved["url"], item["url"]);
    assert_eq!(stack.put_upload(&moved, body.clone()).await?, 403, "a URL is only for its own key");
    assert!(stack.object(&format!("uploads/{other}")).await?.is_none());
    // An expired URL, signed by our signer with the stack's credentials 16 minutes ago.
    let signer = shared::presign::Presigner::new(
        shared::presign::S3Endpoint::path_style(&std::env::var("AWS_ENDPOINT_URL_S3")?, &stack.bucket).unwrap(),
        "us-east-1",
    );
    let creds = shared::presign::Credentials {
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        session_token: None,
    };
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(16);
    let key = format!("uploads/{hash}");
    let checksum = shared::hash::Sha256Hash::of(&body).to_base64();
    let spec = shared::presign::UploadSpec {
        key: &key,
        content_length: body.len() as u64,
        sha256_b64: &checksum,
        content_type: "application/octet-stream",
    };
    let old = signer.put(&creds, &spec, past, 900);
    let mut expired = item.clone();
    expired["url"] = json!(old.url);
    assert_eq!(stack.put_upload(&expired, body.clone()).await?, 403, "expired URL must be refused");

    // None of that stored anything or changed the record.
    assert!(stack.object(&format!("uploads/{hash}")).await?.is_none());
    assert!(stack.object(&format!("media/{hash}")).await?.is_none());
    let (_, info) =
        stack.call(reqwest::Method::GET, &format!("/v1/media/{hash}"), Some(&stack.token("upload")), None).await?;
    assert_eq!(info["status"], "pending");

    // The genuine upload still works afterwards.
    assert_eq!(stack.put_upload(item, body.clone()).await?, 200);
    assert_eq!(stack.wait_processed(&hash).await?["status"], "ready");
    Ok(())
}

#[tokio::test]
async fn repeated_and_concurrent_events_are_harmless() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let (app, blobs) = app_with_objects().await?;
    let body = unique_png();
    let hash = sha256_hex(&body);
    let items = stack.request_uploads("replays", &[("replay.png", &body)]).await?;
    assert_eq!(stack.put_upload(&items[0], body.clone()).await?, 200);
    // The gateway's own delivery races with three more deliveries of the same event.
    // The sample event from events/, pointed at this upload.
    let mut fixture: Value = serde_json::from_str(include_str!("../../events/process-upload.json"))?;
    fixture["Records"][0]["s3"]["object"]["key"] = json!(format!("uploads/{hash}"));
    fixture["Records"][0]["s3"]["object"]["size"] = json!(body.len());
    let event: aws_lambda_events::s3::S3Event = serde_json::from_value(fixture)?;
    let ports = app.processing(&*blobs);
    let runs = (0..3).map(|_| shared::process::handle_s3_event(&ports, &event));
    for result in join_all(runs).await {
        result?;
    }
    let info = stack.wait_processed(&hash).await?;
    assert_eq!(info["status"], "ready");
    let first = stack.record(&hash).await?.unwrap();
    let stored = stack.object(&format!("media/{hash}")).await?.expect("stored");

    // And once more, long after: nothing changes.
    let outcomes = shared::process::handle_s3_event(&app.processing(&*blobs), &event).await?;
    assert!(matches!(outcomes[..], [shared::process::Outcome::Skipped(_)]), "{outcomes:?}");
    let mut later = stack.record(&hash).await?.unwrap();
    let mut before = first.clone();
    later.remove("updated_at");
    before.remove("updated_at");
    assert_eq!(later, before);
    assert_eq!(stack.object(&format!("media/{hash}")).await?.unwrap().0, stored.0);
    stack.wait_gone(&format!("uploads/{hash}")).await?;
    Ok(())
}

#[tokio::test]
async fn whole_deck_pages_through_the_index() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let deck = format!("paging-{}-{}", std::process::id(), &sha256_hex(&unique_bytes(8))[..8]);
    // Referenced, never-uploaded files: a little more than two pages.
    let page: usize = std::env::var("DOWNLOAD_PAGE_SIZE").ok().and_then(|p| p.parse().ok()).unwrap_or(2000);
    let total = page * 2 + 100;
    let blobs: Vec<Vec<u8>> = (0..total).map(|_| unique_bytes(16)).collect();
    let names: Vec<String> = (0..blobs.len()).map(|i| format!("f{i:05}.png")).collect();
    let pairs: Vec<(&String, &Vec<u8>)> = names.iter().zip(&blobs).collect();
    let notes: Vec<Value> = pairs
        .chunks(100)
        .enumerate()
        .map(|(i, chunk)| {
            let media: Vec<Value> = chunk.iter().map(|(n, b)| json!({"filename": n, "hash": sha256_hex(b)})).collect();
            json!({"note_id": format!("n{i}"), "media": media})
        })
        .collect();
    let (status, answer) =
        stack.post("/v1/references", &stack.token("references"), json!({"deck": deck, "notes": notes})).await?;
    assert_eq!((status, answer["added"].as_u64()), (200, Some(total as u64)), "{answer}");
    let token = stack.token("download");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut requests = 0;
    loop {
        let (status, page) = stack.post("/v1/downloads", &token, json!({"deck": deck, "cursor": cursor})).await?;
        assert_eq!(status, 200, "{page}");
        requests += 1;
        assert_eq!(page["files"], json!([]));
        for u in page["unavailable"].as_array().unwrap() {
            assert_eq!(u["reason"], "missing");
            seen.push(u["filename"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, names, "every file exactly once, in order");
    assert!(requests <= 3, "{requests} requests");
    Ok(())
}

#[tokio::test]
async fn api_errors_have_status_and_reason_codes() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let upload = stack.token("upload");
    let download = stack.token("download");
    let cases: Vec<(Option<&str>, Value, u16, &str)> = vec![
        (None, json!({"deck": "d", "files": []}), 401, "unauthorized"),
        (Some("not-a-token"), json!({"deck": "d", "files": []}), 401, "unauthorized"),
        (Some(&download), json!({"deck": "d", "files": []}), 403, "forbidden"),
        (Some(&upload), json!({"deck": "d"}), 400, "bad_request"),
        (
            Some(&upload),
            json!({"deck": "bad deck", "files": [{"hash": "x", "size": 1, "filename": "a.png"}]}),
            400,
            "bad_request",
        ),
        (
            Some(&upload),
            json!({"deck": "d", "files": [{"hash": "x", "size": "big", "filename": "a.png"}]}),
            400,
            "bad_request",
        ),
    ];
    for (token, body, status, code) in cases {
        let (s, b) = stack.call(reqwest::Method::POST, "/v1/uploads", token, Some(body.clone())).await?;
        assert_eq!((s, b["error"]["code"].as_str().unwrap_or_default()), (status, code), "{body}: {b}");
    }
    let (_, b) = stack
        .post(
            "/v1/uploads",
            &upload,
            json!({"deck": "d", "files": [{"hash": "x", "size": "big", "filename": "a.png"}]}),
        )
        .await?;
    assert!(b["error"]["message"].as_str().unwrap().contains("files[0].size"), "{b}");

    let many: Vec<Value> =
        (0..501).map(|i| json!({"hash": format!("{i:064x}"), "size": 1, "filename": "a.png"})).collect();
    let (s, b) = stack.post("/v1/uploads", &upload, json!({"deck": "d", "files": many})).await?;
    assert_eq!((s, b["error"]["code"].as_str().unwrap()), (413, "too_many_items"));

    // Per-item problems are reported on the item.
    let good = unique_png();
    let items = stack
        .post(
            "/v1/uploads",
            &upload,
            json!({"deck": "d", "files": [
                {"hash": "ABC", "size": 10, "filename": "a.png"},
                {"hash": sha256_hex(&good), "size": good.len(), "filename": "../a.png"},
                {"hash": sha256_hex(&good), "size": 51 << 20, "filename": "big.png"},
                {"hash": sha256_hex(&good), "size": good.len(), "filename": "x.pdf"},
            ]}),
        )
        .await?
        .1;
    let reasons: Vec<&str> = items["files"].as_array().unwrap().iter().map(|i| i["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["bad_hash", "bad_filename", "too_large", "unsupported_type"]);

    let (s, b) = stack.call(reqwest::Method::GET, "/v1/media/nothex", Some(&upload), None).await?;
    assert_eq!((s, b["error"]["code"].as_str().unwrap()), (400, "bad_request"));
    let (s, b) =
        stack.call(reqwest::Method::GET, &format!("/v1/media/{}", "0".repeat(64)), Some(&upload), None).await?;
    assert_eq!((s, b["error"]["code"].as_str().unwrap()), (404, "not_found"));
    let (s, _) = stack.call(reqwest::Method::GET, "/v1/nothing", Some(&upload), None).await?;
    assert_eq!(s, 404);
    Ok(())
}

/// The DynamoDB quota counters (moto): concurrent reservations never pass the limit, a hash is
/// charged once a day, and a release gives back exactly once.
#[tokio::test]
async fn daily_quota_counters_hold_under_concurrency() -> anyhow::Result<()> {
    use shared::store::{Hold, Reserve, Settlement};
    let app = shared::App::from_env().await?;
    let user = format!("quota-{}", &sha256_hex(&unique_bytes(8))[..10]);
    let hold = |i: usize| Hold {
        user: user.clone(),
        day: "2026-11-22".into(),
        hash: shared::hash::Sha256Hash::parse(&sha256_hex(format!("{user}-{i}").as_bytes())).unwrap(),
        bytes: 100,
    };
    let results = join_all((0..30).map(|i| {
        let (app, h) = (&app, hold(i));
        async move { app.quotas.reserve(&h, ISSUED, 1_000_000, 10).await }
    }))
    .await;
    let granted = results.iter().filter(|r| matches!(r, Ok(Reserve::Granted))).count();
    let exceeded = results.iter().filter(|r| matches!(r, Ok(Reserve::Exceeded))).count();
    assert_eq!((granted, exceeded), (10, 20), "{results:?}");
    assert_eq!(app.quotas.usage(&user, "2026-11-22").await?, (1000, 10));

    let first = (0..30).find(|i| matches!(results[*i], Ok(Reserve::Granted))).unwrap_or(0);
    assert_eq!(app.quotas.reserve(&hold(first), ISSUED, 1_000_000, 10).await?, Reserve::AlreadyHeld);
    app.quotas.release(&hold(first)).await?;
    app.quotas.release(&hold(first)).await?;
    assert_eq!(app.quotas.usage(&user, "2026-11-22").await?, (900, 9));
    // Bytes are a limit of their own.
    let big = Hold { bytes: 250, ..hold(100) };
    assert_eq!(app.quotas.reserve(&big, ISSUED, 1_100, 100).await?, Reserve::Exceeded);
    assert_eq!(app.quotas.reserve(&Hold { bytes: 200, ..hold(101) }, ISSUED, 1_100, 100).await?, Reserve::Granted);
    assert_eq!(app.quotas.usage(&user, "2026-11-22").await?, (1100, 10));

    // Settling, through the pending index: each hold once, however often it is asked.
    let granted: Vec<usize> = (0..30).filter(|i| matches!(results[*i], Ok(Reserve::Granted))).collect();
    let (stored, rejected) = (hold(granted[1]), hold(granted[2]));
    let settle_twice = |h: shared::hash::Sha256Hash, outcome| {
        let app = &app;
        async move { join_all((0..2).map(|_| app.quotas.settle(&h, outcome))).await }
    };
    let settled = settle_twice(stored.hash, Settlement::Stored).await;
    assert_eq!(settled.into_iter().map(|r| r.unwrap()).sum::<usize>(), 1);
    let settled = settle_twice(rejected.hash, Settlement::Rejected).await;
    assert_eq!(settled.into_iter().map(|r| r.unwrap()).sum::<usize>(), 1);
    // The refused file's bytes came back; its file still counts.
    assert_eq!(app.quotas.usage(&user, "2026-11-22").await?, (1000, 10));
    // A settled hold is not released, by presign or by the sweep.
    app.quotas.release(&stored).await?;
    assert_eq!(app.quotas.usage(&user, "2026-11-22").await?, (1000, 10));
    // The rest were never used: once old enough, the sweep gives them back in full. (ISSUED is
    // long past, so no other test's fresh holds are touched.)
    app.quotas.release_unused("2000-01-01T00:00:00Z").await?;
    assert_eq!(app.quotas.usage(&user, "2026-11-22").await?, (1000, 10));
    app.quotas.release_unused("2000-01-01T02:00:00Z").await?;
    assert_eq!(
        app.quotas.usage(&user, "2026-11-22").await?,
        (100, 2),
        "only the stored hold and the refused file remain"
    );
    Ok(())
}

/// A rejected record is final for its hash only when its reason says something about the
/// content; with a retryable reason (the upload went wrong, not the file) or none at all, a fresh
/// URL is issued. The DynamoDB condition and the memory store once disagreed about a record
/// without a reason; both now read `MediaRecord::finally_rejected`.
#[tokio::test]
async fn a_rejection_is_final_only_with_a_final_reason() -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    use shared::model::RejectReason;
    use shared::store::{BeginUpload, MediaRepo, PendingUpload};
    let stack = Stack::connect().await?;
    let memory = shared::store::memory::MemoryStore::default();
    let cases = [
        (None, false),
        (Some(RejectReason::HashMismatch), false),
        (Some(RejectReason::QuotaExceeded), false),
        (Some(RejectReason::UnsupportedType), true),
        (Some(RejectReason::CorruptMedia), true),
    ];
    for (reason, is_final) in cases {
        let body = unique_png();
        let hash = sha256_hex(&body);
        let mut item = HashMap::from([
            ("hash".to_string(), A::S(hash.clone())),
            ("status".to_string(), A::S("rejected".into())),
            ("ref_count".to_string(), A::N("0".into())),
            ("updated_at".to_string(), A::S("2026-11-30T00:00:00Z".into())),
        ]);
        if let Some(r) = reason {
            item.insert("reason".into(), A::S(r.code().into()));
        }
        stack.ddb.put_item().table_name(&stack.media_table).set_item(Some(item)).send().await?;
        let answer = &stack.request_uploads("rejections", &[("r.png", &body)]).await?[0];
        if is_final {
            assert_eq!((&answer["status"], &answer["reason"]), (&json!("rejected"), &json!(reason.unwrap().code())));
        } else {
            assert_eq!(answer["status"], "upload", "{reason:?}: {answer}");
        }
        // The memory store, given the same record, answers the same (a record without a reason
        // cannot be written through its trait, so that case is DynamoDB's alone).
        if let Some(r) = reason {
            let h = shared::hash::Sha256Hash::parse(&hash)?;
            memory.ensure_record(&h, "2026-11-30T00:00:00Z").await?;
            memory.mark_rejected(&h, r, "2026-11-30T00:00:00Z").await?;
            let upload = PendingUpload {
                hash: h,
                size: body.len() as u64,
                uploader: "u",
                expires_at: "2026-12-30T00:00:00Z",
                now: "2026-11-30T00:00:01Z",
            };
            let began = memory.begin_upload(&upload).await?;
            let want = if is_final { BeginUpload::Rejected(r) } else { BeginUpload::Started };
            assert_eq!(began, want, "{r:?}");
        }
        stack.forget(&hash).await?;
    }
    Ok(())
}

/// Issue 20: a hold is charged once per (user, day, hash). Asking again for the same hash with
/// another size must not yield a URL for that size (it would be charged nothing): the
/// reproduction, then the same under concurrency. Whatever sizes are asked, the bytes charged
/// are exactly what the issued URLs allow.
#[tokio::test]
async fn a_second_size_for_a_held_hash_gets_no_uncharged_url() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let app = shared::App::from_env().await?;
    let user = format!("sizes-{}", &sha256_hex(&unique_bytes(8))[..10]);
    let token = shared::auth::mint(stack.secret.as_bytes(), &user, "upload", &[], 3600);
    let today = || {
        let now = time::OffsetDateTime::now_utc();
        format!("{:04}-{:02}-{:02}", now.year(), u8::from(now.month()), now.day())
    };
    let ask = |hash: String, size: u64| {
        let (stack, token) = (&stack, &token);
        async move {
            let body = json!({"deck": "sizes", "files": [{"hash": hash, "size": size, "filename": "big.png"}]});
            let (status, answer) = stack.post("/v1/uploads", token, body).await?;
            anyhow::ensure!(status == 200, "{answer}");
            anyhow::Ok(answer["files"][0].clone())
        }
    };

    let h = sha256_hex(&unique_bytes(5_000_044));
    let first = ask(h.clone(), 1).await?;
    assert_eq!((first["status"].as_str(), first["headers"]["content-length"].as_str()), (Some("upload"), Some("1")));
    assert_eq!(app.quotas.usage(&user, &today()).await?, (1, 1));
    let second = ask(h.clone(), 5_000_044).await?;
    assert_eq!(second, json!({"hash": h, "status": "rejected", "reason": "size_mismatch"}));
    assert_eq!(app.quotas.usage(&user, &today()).await?, (1, 1), "still charged for what the one URL allows");
    // The same size again is the same hold: a fresh URL, no new charge.
    assert_eq!(ask(h.clone(), 1).await?["status"], "upload");
    assert_eq!(app.quotas.usage(&user, &today()).await?, (1, 1));

    // Concurrently, for another hash: one size wins, and only it is charged and signed.
    let h2 = sha256_hex(&unique_bytes(64));
    let sizes = [1u64, 2, 5_000_044, 3, 4_000_000, 5, 6, 7, 9_000_000, 8, 9, 10];
    let answers = join_all(sizes.iter().map(|s| ask(h2.clone(), *s))).await;
    let signed: std::collections::BTreeSet<u64> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .filter(|a| a["status"] == "upload")
        .map(|a| a["headers"]["content-length"].as_str().unwrap_or_default().parse().unwrap_or(0))
        .collect();
    assert_eq!(signed.len(), 1, "one size is signed: {answers:?}");
    for a in &answers {
        let a = a.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(a["status"] == "upload" || a["reason"] == "size_mismatch", "{a}");
    }
    let charged = *signed.iter().next().unwrap_or(&0);
    assert_eq!(app.quotas.usage(&user, &today()).await?, (1 + charged, 2));
    Ok(())
}

/// Long past: holds issued then are the only ones `release_unused` of 2000-01-01 may touch.
const ISSUED: &str = "2000-01-01T01:00:00Z";

/// Quotas end to end, through the gateway: presign charges, processing settles (stored stays
/// charged; refused gives its bytes back), and the sweep gives back a URL that went unused.
/// Serial: the sweep's release of unused holds is global.
#[tokio::test]
async fn serial_quota_holds_settle_when_processing_finishes() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let (app, blobs) = app_with_objects().await?;
    let user = format!("quota-e2e-{}", &sha256_hex(&unique_bytes(8))[..10]);
    let token = shared::auth::mint(stack.secret.as_bytes(), &user, "upload", &[], 3600);
    let now = time::OffsetDateTime::now_utc();
    let day = format!("{:04}-{:02}-{:02}", now.year(), u8::from(now.month()), now.day());
    let (good, bad, unused) = (unique_png(), unique_bytes(300), unique_bytes(500));
    let files: Vec<Value> = [(&good, "good.png"), (&bad, "bad.png"), (&unused, "unused.png")]
        .iter()
        .map(|(b, name)| json!({"hash": sha256_hex(b), "size": b.len(), "filename": name}))
        .collect();
    let (status, body) = stack.post("/v1/uploads", &token, json!({"deck": "quota-e2e", "files": files})).await?;
    assert_eq!(status, 200, "{body}");
    let items = body["files"].as_array().context("no files")?;
    let total = (good.len() + bad.len() + unused.len()) as u64;
    assert_eq!(app.quotas.usage(&user, &day).await?, (total, 3));

    for (item, bytes) in items.iter().zip([&good, &bad]) {
        assert_eq!(stack.put_upload(item, bytes.clone()).await?, 200);
    }
    assert_eq!(stack.wait_processed(&sha256_hex(&good)).await?["status"], "ready");
    assert_eq!(stack.wait_processed(&sha256_hex(&bad)).await?["status"], "rejected");
    // Settling follows the record's update; wait for it.
    let settled = (good.len() as u64 + unused.len() as u64, 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.quotas.usage(&user, &day).await? != settled {
        anyhow::ensure!(std::time::Instant::now() < deadline, "usage {:?}", app.quotas.usage(&user, &day).await?);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Asking again for the stored file costs nothing: it exists.
    let again = json!({"deck": "quota-e2e", "files": [files[0].clone()]});
    let (_, body) = stack.post("/v1/uploads", &token, again).await?;
    assert_eq!(body["files"][0]["status"], "exists");
    assert_eq!(app.quotas.usage(&user, &day).await?, settled);

    // Two hours on, the unused URL's hold is given back in full; the rest stay as settled.
    let later = now + time::Duration::hours(2);
    let report = shared::lifecycle::sweep(&app.lifecycle(&*blobs), later, shared::config::DEFAULT_SWEEP_GRACE).await?;
    assert!(report.holds_released >= 1, "{report:?}");
    assert_eq!(app.quotas.usage(&user, &day).await?, (good.len() as u64, 2));
    Ok(())
}

/// A PCM WAV of `ms` milliseconds (16-bit mono at `rate` Hz) of noise no other test makes, whose
/// data chunk says it holds `claimed_ms`.
fn wav(rate: u32, ms: u64, claimed_ms: u64) -> Vec<u8> {
    let bytes_for = |ms: u64| (u64::from(rate) * 2 * ms / 1000) as usize;
    let data = unique_bytes(bytes_for(ms));
    let mut w = b"RIFF".to_vec();
    w.extend_from_slice(&((36 + data.len()) as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(bytes_for(claimed_ms) as u32).to_le_bytes());
    w.extend(data);
    w
}

#[tokio::test]
async fn audio_durations_are_read_and_limited() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    // Read from the headers, reported by GET /v1/media/{hash} and to maintainers.
    let clip = wav(8000, 2500, 2500);
    let info = stack.upload_processed("clip.wav", &clip).await?;
    assert_eq!((info["status"].as_str(), info["duration_ms"].as_u64()), (Some("ready"), Some(2500)), "{info}");
    let deck = integration_tests::deck("durations");
    let hash = sha256_hex(&clip);
    stack.references(&deck, json!([{"note_id": "1", "media": [{"filename": "clip.wav", "hash": hash}]}])).await?;
    let (status, listing) = stack
        .call(reqwest::Method::GET, &format!("/v1/decks/{deck}/media"), Some(&stack.maintainer(&[&deck])), None)
        .await?;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["files"][0]["duration_ms"], 2500, "{listing}");

    // Five minutes is the limit; a second more is refused, and nothing is stored.
    let long = wav(2000, 301_000, 301_000);
    let info = stack.upload_processed("long.wav", &long).await?;
    assert_eq!((info["status"].as_str(), info["reason"].as_str()), (Some("rejected"), Some("too_long")), "{info}");
    assert!(stack.object(&format!("media/{}", sha256_hex(&long))).await?.is_none());

    // A header announcing ten hours over a second of samples: a truncated file, not a long one.
    let cut = wav(8000, 1000, 36_000_000);
    let info = stack.upload_processed("cut.wav", &cut).await?;
    assert_eq!((info["status"].as_str(), info["reason"].as_str()), (Some("rejected"), Some("corrupt_media")), "{info}");
    Ok(())
}

/// Runs a command of the audio tools that `scripts/bootstrap` installs (sox, espeak-ng, lame).
fn tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("{program} is needed (scripts/bootstrap installs it)"))?;
    anyhow::ensure!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A 16-bit PCM WAV's rate, channel count and interleaved samples.
fn pcm16(wav: &[u8]) -> anyhow::Result<(u32, usize, Vec<i16>)> {
    let (mut at, mut format) = (12, None);
    while at + 8 <= wav.len() {
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into()?) as usize;
        let body = &wav[at + 8..(at + 8 + size).min(wav.len())];
        match &wav[at..at + 4] {
            b"fmt " => {
                format =
                    Some((u16::from_le_bytes([body[2], body[3]]) as usize, u32::from_le_bytes(body[4..8].try_into()?)))
            }
            b"data" => {
                let (channels, rate) = format.context("data before fmt")?;
                return Ok((rate, channels, body.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]])).collect()));
            }
            _ => {}
        }
        at += 8 + size + (size & 1);
    }
    anyhow::bail!("no data chunk")
}

/// Pearson correlation and SNR (dB) of `got` against `want`, channel by channel (the worst),
/// over the frames both have.
fn closeness(want: &[i16], got: &[i16], channels: usize) -> (f64, f64) {
    let frames = want.len().min(got.len()) / channels;
    let (mut worst_r, mut worst_snr) = (f64::MAX, f64::MAX);
    for c in 0..channels {
        let w: Vec<f64> = (0..frames).map(|i| f64::from(want[i * channels + c])).collect();
        let g: Vec<f64> = (0..frames).map(|i| f64::from(got[i * channels + c])).collect();
        let (mw, mg) = (w.iter().sum::<f64>() / frames as f64, g.iter().sum::<f64>() / frames as f64);
        let cov: f64 = w.iter().zip(&g).map(|(a, b)| (a - mw) * (b - mg)).sum();
        let (vw, vg): (f64, f64) = (w.iter().map(|a| (a - mw).powi(2)).sum(), g.iter().map(|b| (b - mg).powi(2)).sum());
        let noise: f64 = w.iter().zip(&g).map(|(a, b)| (a - b).powi(2)).sum();
        worst_r = worst_r.min(cov / (vw * vg).sqrt());
        worst_snr = worst_snr.min(10.0 * (w.iter().map(|a| a * a).sum::<f64>() / noise).log10());
    }
    (worst_r, worst_snr)
}

#[tokio::test]
async fn uncompressed_audio_is_stored_as_a_smaller_mp3_that_plays_the_same() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let dir = std::env::temp_dir().join(format!("ankicollab-audio-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    // Speech (espeak-ng: 22.05 kHz mono) and a stereo tone of a different pitch in each ear, each as
    // WAV, FLAC and AIFF. A pid-dependent pitch keeps the files new on a stack that has seen them.
    let pitch = 300 + std::process::id() % 200;
    tool(
        "espeak-ng",
        &["-w", &path("speech.wav"), "Pronunciation practice: the quick brown fox jumps over the lazy dog."],
    )?;
    tool(
        "sox",
        &[
            "-n",
            "-r",
            "44100",
            "-c",
            "2",
            "-b",
            "16",
            &path("tone.wav"),
            "synth",
            "3",
            "sine",
            &pitch.to_string(),
            "sine",
            &(pitch * 3 / 2).to_string(),
            "gain",
            "-6",
        ],
    )?;
    for source in ["speech", "tone"] {
        tool("sox", &[&path(&format!("{source}.wav")), &path(&format!("{source}.flac"))])?;
        tool("sox", &[&path(&format!("{source}.wav")), &path(&format!("{source}.aiff"))])?;
    }
    for name in ["speech.wav", "speech.flac", "speech.aiff", "tone.wav", "tone.flac", "tone.aiff"] {
        let original = std::fs::read(path(name))?;
        let info = stack.upload_processed(name, &original).await?;
        assert_eq!(info["status"], "ready", "{name}: {info}");
        assert_eq!(info["content_type"], "audio/mpeg", "{name}: {info}");
        let hash = sha256_hex(&original);
        let (stored, meta) = stack.object(&format!("media/{hash}")).await?.context("stored object")?;
        assert_eq!(meta["content-type"], "audio/mpeg", "{name}");
        assert_eq!(info["stored_size"].as_u64(), Some(stored.len() as u64), "{name}");
        assert_eq!(info["stored_hash"].as_str(), Some(sha256_hex(&stored).as_str()), "{name}");

        // Decoded by LAME's own decoder (which trims the encoder's delay and padding, as the tag
        // says) against the original decoded by sox, both as 16-bit PCM.
        std::fs::write(path("stored.mp3"), &stored)?;
        tool("lame", &["--quiet", "--decode", &path("stored.mp3"), &path("decoded.wav")])?;
        tool("sox", &[&path(name), "-b", "16", &path("reference.wav")])?;
        let (rate, channels, want) = pcm16(&std::fs::read(path("reference.wav"))?)?;
        let (got_rate, got_channels, got) = pcm16(&std::fs::read(path("decoded.wav"))?)?;
        assert_eq!((got_rate, got_channels), (rate, channels), "{name}: rate and channels kept");
        let ms = |samples: usize| (samples / channels) as f64 * 1000.0 / f64::from(rate);
        let (want_ms, got_ms) = (ms(want.len()), ms(got.len()));
        assert!((want_ms - got_ms).abs() <= 50.0, "{name}: {got_ms:.0} ms decoded, {want_ms:.0} ms uploaded");
        let frames = (want.len() / channels) as u64;
        assert_eq!(info["duration_ms"].as_u64(), Some(frames * 1000 / u64::from(rate)), "{name}: {info}");
        let (r, snr) = closeness(&want, &got, channels);
        println!(
            "{name}: {} → {} bytes ({:.3}×), correlation {r:.4}, SNR {snr:.1} dB",
            original.len(),
            stored.len(),
            stored.len() as f64 / original.len() as f64
        );
        // FLAC is already about half of PCM: smaller is what counts there; PCM shrinks threefold.
        let most = if name.ends_with(".flac") { original.len() } else { original.len() / 3 };
        assert!(stored.len() < most, "{name}: {} of {} bytes", stored.len(), original.len());
        assert!(r >= 0.97, "{name}: correlation {r:.4} (SNR {snr:.1} dB)");
    }

    // Truncated: a WAV cut in its data is refused, as is one longer than the limit.
    let speech = std::fs::read(path("speech.wav"))?;
    let info = stack.upload_processed("cut.wav", &speech[..speech.len() / 2]).await?;
    assert_eq!((info["status"].as_str(), info["reason"].as_str()), (Some("rejected"), Some("corrupt_media")), "{info}");
    tool(
        "sox",
        &["-n", "-r", "8000", "-c", "1", "-b", "16", &path("long.flac"), "synth", "301", "sine", &pitch.to_string()],
    )?;
    let info = stack.upload_processed("long.flac", &std::fs::read(path("long.flac"))?).await?;
    assert_eq!((info["status"].as_str(), info["reason"].as_str()), (Some("rejected"), Some("too_long")), "{info}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn a_large_original_that_converts_below_the_stored_limit_is_kept() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    // A 3,200 × 3,200 screenshot-like gradient, saved without compression: 30 MB of PNG (over the
    // 10 MB stored limit, within the 50 MB original one) that is a few kB as WebP.
    let seed = unique_png()[40] as u32;
    let img = image::RgbImage::from_fn(3200, 3200, |x, y| {
        image::Rgb([(x / 13) as u8, (y / 13) as u8, ((x + y + seed) / 26) as u8])
    });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut png,
        image::codecs::png::CompressionType::Uncompressed,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(img.as_raw(), 3200, 3200, image::ExtendedColorType::Rgb8)?;
    assert!(png.len() > 30_000_000, "{} bytes", png.len());
    let hash = sha256_hex(&png);
    let items = stack.request_uploads("large-originals", &[("scan.png", &png)]).await?;
    assert_eq!(items[0]["status"], "upload", "announced and accepted: {}", items[0]);
    assert_eq!(stack.put_upload(&items[0], png.clone()).await?, 200);
    let info = stack.wait_processed(&hash).await?;
    assert_eq!(info["status"], "ready", "{info}");
    let stored = info["stored_size"].as_u64().unwrap_or(u64::MAX);
    assert!(stored < 10 * 1024 * 1024, "stored {stored} bytes");
    assert_eq!((info["width"].as_u64(), info["height"].as_u64()), (Some(3200), Some(3200)));
    // Over the original limit is refused before any upload.
    let items = stack.request_uploads("large-originals", &[("huge.png", &vec![0u8; 51 << 20])]).await?;
    assert_eq!((items[0]["status"].as_str(), items[0]["reason"].as_str()), (Some("rejected"), Some("too_large")));
    Ok(())
}
