//! Reference tracking, the maintainer API and the orphan sweep, on the local stack.
//!
//! Tests whose names start with `serial_` run a sweep with no grace period, which would delete
//! other tests' unreferenced uploads: `scripts/test` runs them after the rest, one at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::future::join_all;
use integration_tests::{app_with_objects, sha256_hex, unique_bytes, unique_png, Stack};
use serde_json::{json, Value};
use shared::store::mirror::Mirror;

fn count(item: &HashMap<String, AttributeValue>) -> i64 {
    item.get("ref_count").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

async fn ref_count(stack: &Stack, hash: &str) -> anyhow::Result<Option<i64>> {
    Ok(stack.record(hash).await?.as_ref().map(count))
}

#[tokio::test]
async fn references_have_set_semantics_and_drive_the_deck_index() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let deck = format!("refs-{}", &sha256_hex(&unique_bytes(8))[..10]);
    let (a, b) = (unique_png(), unique_png());
    let (ha, hb) = (sha256_hex(&a), sha256_hex(&b));
    stack.upload_processed("a.png", &a).await?;

    let notes = json!([
        {"note_id": "n1", "media": [{"filename": "a.png", "hash": ha}, {"filename": "b.png", "hash": hb}]},
        {"note_id": "n2", "media": [{"filename": "a.png", "hash": ha}]},
    ]);
    let body = stack.references(&deck, notes.clone()).await?;
    assert_eq!(body, json!({"notes": 2, "added": 3, "removed": 0}));
    assert_eq!(ref_count(&stack, &ha).await?, Some(2));
    assert_eq!(ref_count(&stack, &hb).await?, Some(1));
    // b was referenced before anyone uploaded it.
    let (_, info) =
        stack.call(reqwest::Method::GET, &format!("/v1/media/{hb}"), Some(&stack.token("download")), None).await?;
    assert_eq!(info["status"], "missing");

    // Replaying changes nothing.
    let body = stack.references(&deck, notes).await?;
    assert_eq!(body, json!({"notes": 2, "added": 0, "removed": 0}));
    assert_eq!(ref_count(&stack, &ha).await?, Some(2));

    // Downloads resolve through the references.
    let (_, dl) = stack
        .post(
            "/v1/downloads",
            &stack.token("download"),
            json!({"deck": deck, "filenames": ["a.png", "b.png", "c.png"]}),
        )
        .await?;
    assert_eq!(dl["files"][0]["filename"], "a.png");
    let reasons: BTreeMap<&str, &str> = dl["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["filename"].as_str().unwrap(), u["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons, BTreeMap::from([("b.png", "missing"), ("c.png", "unknown")]));

    // The maintainer sees both files with their note counts, and can search.
    let maintainer = stack.maintainer(&[&deck]);
    let (status, page) =
        stack.call(reqwest::Method::GET, &format!("/v1/decks/{deck}/media"), Some(&maintainer), None).await?;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<(&str, i64)> = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["filename"].as_str().unwrap(), f["notes"].as_i64().unwrap()))
        .collect();
    assert_eq!(listed, [("a.png", 2), ("b.png", 1)]);
    assert!(page["files"][0]["url"].as_str().is_some() && page["files"][0]["thumbnail_url"].as_str().is_some());
    let (_, page) =
        stack.call(reqwest::Method::GET, &format!("/v1/decks/{deck}/media?q=B."), Some(&maintainer), None).await?;
    assert_eq!(page["files"].as_array().unwrap().len(), 1);
    // Not their deck, or not a maintainer.
    let (status, _) = stack
        .call(reqwest::Method::GET, &format!("/v1/decks/{deck}/media"), Some(&stack.maintainer(&["other"])), None)
        .await?;
    assert_eq!(status, 403);
    let (status, _) = stack
        .call(reqwest::Method::GET, &format!("/v1/decks/{deck}/media"), Some(&stack.token("download")), None)
        .await?;
    assert_eq!(status, 403);

    // Removing a.png from the deck removes both notes' references.
    let (status, body) =
        stack.call(reqwest::Method::DELETE, &format!("/v1/decks/{deck}/media/a.png"), Some(&maintainer), None).await?;
    assert_eq!((status, body), (200, json!({"removed": 2})));
    assert_eq!(ref_count(&stack, &ha).await?, Some(0));
    // n1 now holds only b.png; emptying it removes the note.
    let body = stack.references(&deck, json!([{"note_id": "n1", "media": []}])).await?;
    assert_eq!(body, json!({"notes": 1, "added": 0, "removed": 1}));
    assert_eq!(ref_count(&stack, &hb).await?, Some(0));
    let (_, page) =
        stack.call(reqwest::Method::GET, &format!("/v1/decks/{deck}/media"), Some(&maintainer), None).await?;
    assert_eq!(page["files"], json!([]));

    // Bad input is refused whole, with the field named, and changes nothing.
    let notes =
        json!([{"note_id": "n3", "media": [{"filename": "ok.png", "hash": ha}, {"filename": "../x", "hash": ha}]}]);
    let (status, body) =
        stack.post("/v1/references", &stack.token("references"), json!({"deck": deck, "notes": notes})).await?;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("notes[0].media[1].filename"), "{body}");
    assert_eq!(ref_count(&stack, &ha).await?, Some(0));
    let (status, _) =
        stack.post("/v1/references", &stack.token("upload download"), json!({"deck": deck, "notes": []})).await?;
    assert_eq!(status, 403);
    Ok(())
}

/// A sweep with no grace still leaves what changed within the download instances' memory of
/// ready files (`READY_CACHE_SECS`, 2 s on the local stack; shared/src/servable.rs): wait that out.
async fn wait_out_ready_memory(app: &shared::App) {
    tokio::time::sleep(app.config.min_sweep_grace().unsigned_abs() + std::time::Duration::from_millis(200)).await;
}

fn sweep_command(grace: i64) -> shared::lifecycle::SweepCommand {
    shared::lifecycle::SweepCommand::Sweep { grace_seconds: Some(grace) }
}

/// The sweep stopped between every pair of its steps, on DynamoDB and LocalStack S3: it goes on
/// and reports the file; a note referencing the file once the claim has run out is never
/// refused, and the file ends ready with its bytes (uploaded again where the record said
/// missing). The same scenario runs on the in-memory store in `shared`.
#[tokio::test]
async fn serial_a_sweep_stopped_between_any_two_steps_never_refuses_a_reference() -> anyhow::Result<()> {
    use shared::scenarios::sweep_interrupted_at_every_step;
    use shared::store::faulty::Faulty;
    Stack::connect().await?;
    let mut app = shared::App::from_env().await?;
    let faulty = Faulty::new(app.media.clone(), shared::app::object_store(&app.config).await);
    app.media = faulty.clone();
    let salt = unique_bytes(8);
    // Files no other run has made.
    let base = u32::from_le_bytes([salt[0], salt[1], salt[2], salt[3]]) as usize;
    let files = |n: usize| shared::scenarios::png(base.wrapping_add(n));
    let deck = format!("interrupted-{}", &sha256_hex(&salt)[..10]);
    let seen = sweep_interrupted_at_every_step(&app, &faulty, &files, &deck).await?;
    assert_eq!(seen.len(), 12, "{seen:?}");
    Ok(())
}

#[tokio::test]
async fn serial_sweeps_remove_unreferenced_media_after_the_grace_period_only() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let (app, blobs) = app_with_objects().await?;
    let deck = format!("sweep-{}", &sha256_hex(&unique_bytes(8))[..10]);
    let (kept, dropped) = (unique_png(), unique_png());
    let (hk, hd) = (sha256_hex(&kept), sha256_hex(&dropped));
    stack.upload_processed("kept.png", &kept).await?;
    stack.upload_processed("dropped.png", &dropped).await?;
    stack.references(&deck, json!([{"note_id": "n", "media": [{"filename": "kept.png", "hash": hk}]}])).await?;

    // Within the grace period nothing goes.
    let now = time::OffsetDateTime::now_utc();
    let report = shared::lifecycle::run(&app.lifecycle(&*blobs), &sweep_command(3600), now).await?;
    assert_eq!(report["deleted"], 0, "{report}");
    assert!(stack.exists(&format!("media/{hd}")).await?);

    // Asked for no grace, it takes the download instances' memory of ready files as its grace.
    let report = shared::lifecycle::run(&app.lifecycle(&*blobs), &sweep_command(0), now).await?;
    assert_eq!(report["grace_seconds"], app.config.ready_cache_secs, "{report}");
    wait_out_ready_memory(&app).await;
    let now = time::OffsetDateTime::now_utc();
    let report = shared::lifecycle::run(&app.lifecycle(&*blobs), &sweep_command(0), now).await?;
    assert!(report["deleted"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["bytes_reclaimed"].as_u64().unwrap() > 0, "{report}");
    assert!(stack.record(&hd).await?.is_none());
    assert!(!stack.exists(&format!("media/{hd}")).await?);
    assert!(!stack.exists(&format!("thumbs/{hd}.webp")).await?);
    // The referenced one stays, bytes and all.
    assert_eq!(ref_count(&stack, &hk).await?, Some(1));
    assert!(stack.exists(&format!("media/{hk}")).await?);

    // Referencing the swept hash again makes it missing; uploading it again restores it.
    stack.references(&deck, json!([{"note_id": "m", "media": [{"filename": "dropped.png", "hash": hd}]}])).await?;
    let (_, info) =
        stack.call(reqwest::Method::GET, &format!("/v1/media/{hd}"), Some(&stack.token("upload")), None).await?;
    assert_eq!(info["status"], "missing");
    assert_eq!(stack.upload_processed("dropped.png", &dropped).await?["status"], "ready");
    assert_eq!(ref_count(&stack, &hd).await?, Some(1));

    // A pending upload that never arrived is expired too.
    let ghost = unique_png();
    let hg = sha256_hex(&ghost);
    stack.request_uploads("ghosts", &[("ghost.png", &ghost)]).await?;
    wait_out_ready_memory(&app).await;
    let report =
        shared::lifecycle::run(&app.lifecycle(&*blobs), &sweep_command(0), time::OffsetDateTime::now_utc()).await?;
    assert!(report["expired_uploads"].as_u64().unwrap() >= 1, "{report}");
    assert!(stack.record(&hg).await?.is_none());

    // Reconcile finds nothing wrong.
    let report = shared::lifecycle::run(
        &app.lifecycle(&*blobs),
        &serde_json::from_value(json!({"mode": "reconcile"}))?,
        time::OffsetDateTime::now_utc(),
    )
    .await?;
    assert_eq!(report["drift"], json!([]), "{report}");
    assert_eq!(report["records_without_object"], json!([]), "{report}");
    Ok(())
}

/// A small deterministic generator, so a failing run can be repeated with its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[tokio::test]
async fn serial_sweeps_concurrent_writers_keep_every_invariant() -> anyhow::Result<()> {
    let stack = Arc::new(Stack::connect().await?);
    let app = Arc::new(shared::App::from_env().await?);
    let blobs = shared::app::object_store(&app.config).await;
    let deck = format!("chaos-{}", &sha256_hex(&unique_bytes(8))[..10]);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64 | 1;
    println!("seed {seed}");

    // A small pool: four uploaded files and two that never are.
    let pool: Vec<Vec<u8>> = (0..6).map(|_| unique_png()).collect();
    let hashes: Vec<String> = pool.iter().map(|b| sha256_hex(b)).collect();
    for (i, body) in pool.iter().take(4).enumerate() {
        stack.upload_processed(&format!("p{i}.png"), body).await?;
    }
    let ops = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Writers: replace random notes' media sets, sometimes sending the same request twice at once.
    let writers = (0..6).map(|w| {
        let (stack, deck, hashes, ops) = (stack.clone(), deck.clone(), hashes.clone(), ops.clone());
        tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_add(w * 7919) | 1);
            for _ in 0..25 {
                let note = format!("note{}", rng.below(8));
                let media: Vec<Value> = (0..hashes.len())
                    .filter(|_| rng.below(3) == 0)
                    .map(|i| json!({"filename": format!("p{i}.png"), "hash": hashes[i]}))
                    .collect();
                let notes = json!([{"note_id": note, "media": media}]);
                let copies = if rng.below(4) == 0 { 2 } else { 1 };
                let results = join_all((0..copies).map(|_| stack.references(&deck, notes.clone()))).await;
                for r in results {
                    r.unwrap();
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    // Sweeps with no grace period, over and over.
    let sweeper = {
        let (app, blobs, done, ops) = (app.clone(), blobs.clone(), done.clone(), ops.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                shared::lifecycle::sweep(
                    &app.lifecycle(&*blobs),
                    time::OffsetDateTime::now_utc(),
                    time::Duration::ZERO,
                )
                .await
                .unwrap();
                ops.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Uploads and replayed S3 events for the pool, whatever state each hash is in.
    let uploader = {
        let (stack, app, blobs, pool, done, ops) =
            (stack.clone(), app.clone(), blobs.clone(), pool.clone(), done.clone(), ops.clone());
        tokio::spawn(async move {
            let mut rng = Rng(seed ^ 0xdead_beef);
            let mut failed = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let body = &pool[rng.below(4)];
                let items = stack.request_uploads("chaos-uploads", &[("p.png", body)]).await.unwrap();
                if items[0]["status"] == "upload" {
                    let status = stack.put_upload(&items[0], body.clone()).await.unwrap();
                    assert_eq!(status, 200);
                }
                let key = format!("uploads/{}", sha256_hex(body));
                let mut event: Value = serde_json::from_str(include_str!("../../events/process-upload.json")).unwrap();
                event["Records"][0]["s3"]["object"]["key"] = json!(key);
                let event: aws_lambda_events::s3::S3Event = serde_json::from_value(event).unwrap();
                // A sweep racing processing makes it fail; Lambda would retry it, so do we, below.
                if shared::process::handle_s3_event(&app.processing(&*blobs), &event).await.is_err() {
                    failed.push(event);
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            failed
        })
    };
    for w in writers {
        w.await?;
    }
    done.store(true, Ordering::Relaxed);
    sweeper.await?;
    // With the sweeps over, retried events succeed, ours and the gateway's alike. Until then, an
    // event whose record was swept mid-processing has left its object under media/ unrecorded.
    for event in uploader.await? {
        let mut attempts = 0;
        while let Err(e) = shared::process::handle_s3_event(&app.processing(&*blobs), &event).await {
            attempts += 1;
            anyhow::ensure!(attempts < 5, "a retried upload event keeps failing: {e}");
        }
    }
    stack.wait_uploads_settled().await?;

    // Every count equals its reference items, none is negative.
    let counts = app.refs.count_all().await?;
    for h in &hashes {
        let hash = shared::hash::Sha256Hash::parse(h)?;
        let items = counts.get(&hash).copied().unwrap_or(0);
        let record = stack.record(h).await?;
        let recorded = record.as_ref().map(count).unwrap_or(0);
        assert!(recorded >= 0);
        assert_eq!(recorded, items, "{h}: count {recorded} but {items} reference items");
        if items > 0 {
            let record = record.expect("a referenced hash has a record");
            // Every referenced ready hash still has its bytes.
            if record.get("status").and_then(|s| s.as_s().ok()).map(String::as_str) == Some("ready") {
                assert!(stack.exists(&format!("media/{h}")).await?, "{h}: ready and referenced, but no object");
            }
        }
    }
    // No orphan survives a sweep past the grace period.
    wait_out_ready_memory(&app).await;
    shared::lifecycle::sweep(&app.lifecycle(&*blobs), time::OffsetDateTime::now_utc(), time::Duration::ZERO).await?;
    for h in &hashes {
        let hash = shared::hash::Sha256Hash::parse(h)?;
        if counts.get(&hash).copied().unwrap_or(0) == 0 {
            assert!(stack.record(h).await?.is_none(), "{h}: unreferenced record survived");
            assert!(!stack.exists(&format!("media/{h}")).await?, "{h}: unreferenced object survived");
        }
    }
    let report =
        shared::lifecycle::reconcile_counts(&app.lifecycle(&*blobs), false, time::OffsetDateTime::now_utc()).await?;
    assert!(report.drift.is_empty(), "{:?}", report.drift);

    // Postgres, fed by the streams through the gateway, converges to DynamoDB exactly...
    let live = integration_tests::pg::live().await?;
    let mirrored = integration_tests::pg::wait_converged(&app, &live).await?;
    // ...and delivering every stream record once more changes nothing.
    let before = live.snapshot().await?;
    let records = integration_tests::pg::stream_records().await?;
    integration_tests::pg::deliver(&live, &records, 100).await?;
    assert_eq!(live.snapshot().await?.rows, before.rows, "replaying the streams changed Postgres");
    assert_eq!(shared::sync::reconcile_mirror(&*app.media, &*app.decks, &live, false).await?.differences(), 0);
    println!(
        "Postgres equals DynamoDB: {} deck files, {} media records; {} stream records replayed",
        mirrored.files_in_dynamodb,
        mirrored.stored_in_dynamodb,
        records.len()
    );
    println!(
        "ran {} operations (reference requests, sweeps, uploads with replayed events)",
        ops.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Issue 20: two notes of one deck use `a.png` for different bytes. The name means the most
/// recent live reference; when that note lets go, the name means the other again: by name and
/// in whole-deck downloads, in the maintainer listing and in Postgres, and a sweep with no grace
/// period leaves what the name resolves to alone. (Before the fix the index kept the last hash
/// written, `a.png` answered the unreferenced one, and after the sweep `missing`.)
#[tokio::test]
async fn serial_a_filename_two_notes_disagree_on_resolves_to_a_live_reference() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let (app, blobs) = app_with_objects().await?;
    let deck = format!("disagree-{}", &sha256_hex(&unique_bytes(8))[..10]);
    let (first, second) = (unique_png(), unique_png());
    let (h1, h2) = (sha256_hex(&first), sha256_hex(&second));
    stack.upload_processed("a.png", &first).await?;
    stack.upload_processed("a.png", &second).await?;
    let served = |names: Option<Vec<&'static str>>| {
        let (stack, deck) = (&stack, &deck);
        async move {
            let body = match names {
                Some(n) => json!({"deck": deck, "filenames": n}),
                None => json!({"deck": deck}),
            };
            let (_, dl) = stack.post("/v1/downloads", &stack.token("download"), body).await?;
            let file = dl["files"].as_array().and_then(|f| f.iter().find(|f| f["filename"] == "a.png")).cloned();
            anyhow::Ok((file.as_ref().map(|f| f["hash"].as_str().unwrap_or_default().to_string()), file, dl))
        }
    };

    stack.references(&deck, json!([{"note_id": "n1", "media": [{"filename": "a.png", "hash": h1}]}])).await?;
    stack.references(&deck, json!([{"note_id": "n2", "media": [{"filename": "a.png", "hash": h2}]}])).await?;
    assert_eq!(served(Some(vec!["a.png"])).await?.0.as_deref(), Some(h2.as_str()), "the most recent reference");
    stack.references(&deck, json!([{"note_id": "n2", "media": []}])).await?;
    assert_eq!(served(Some(vec!["a.png"])).await?.0.as_deref(), Some(h1.as_str()), "the newest one left");
    assert_eq!(served(None).await?.0.as_deref(), Some(h1.as_str()));
    let (_, listing) = stack
        .call(reqwest::Method::GET, &format!("/v1/decks/{deck}/media"), Some(&stack.maintainer(&[&deck])), None)
        .await?;
    assert_eq!(listing["files"][0]["hash"], h1.as_str(), "{listing}");
    assert_eq!(listing["files"][0]["notes"], 1, "{listing}");

    // The unreferenced version goes; what the name means stays, and still downloads.
    wait_out_ready_memory(&app).await;
    let report =
        shared::lifecycle::run(&app.lifecycle(&*blobs), &sweep_command(0), time::OffsetDateTime::now_utc()).await?;
    assert!(report["deleted"].as_u64().unwrap() >= 1, "{report}");
    assert!(stack.record(&h2).await?.is_none(), "{report}");
    for names in [Some(vec!["a.png"]), None] {
        let (hash, file, dl) = served(names).await?;
        assert_eq!(hash.as_deref(), Some(h1.as_str()), "{dl}");
        let url = file.as_ref().and_then(|f| f["url"].as_str()).unwrap_or_default().to_string();
        assert_eq!(stack.http.get(url).send().await?.status(), 200);
    }

    // Postgres says the same: the name's hash, with its stored row.
    let live = integration_tests::pg::live().await?;
    let row = || async {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT m.hash, s.s3_key FROM anki.media m LEFT JOIN anki.stored_media_files s ON s.hash = m.hash \
             WHERE m.deck_key = $1 AND m.filename = 'a.png'",
        )
        .bind(&deck)
        .fetch_optional(live.pool())
        .await?;
        anyhow::Ok(row)
    };
    let want = Some((h1.clone(), Some(format!("media/{h1}"))));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while row().await? != want {
        anyhow::ensure!(std::time::Instant::now() < deadline, "Postgres has {:?}, not {want:?}", row().await?);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Issue 20 (suspicion): the maintainer DELETE finds a file's notes through the `by_file` index,
/// which DynamoDB updates eventually. Removal is checked against the deck index (written in the
/// same transactions as the references, read consistently), so it is complete: here many notes
/// use the file, and afterwards no download, listing or reference item knows it.
#[tokio::test]
async fn maintainer_delete_removes_every_reference() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let deck = format!("delete-{}", &sha256_hex(&unique_bytes(8))[..10]);
    let png = unique_png();
    let h = sha256_hex(&png);
    stack.upload_processed("gone.png", &png).await?;
    let notes: Vec<Value> =
        (0..40).map(|i| json!({"note_id": format!("n{i}"), "media": [{"filename": "gone.png", "hash": h}]})).collect();
    for chunk in notes.chunks(20) {
        stack.references(&deck, Value::Array(chunk.to_vec())).await?;
    }
    let token = stack.maintainer(&[&deck]);
    let (status, body) =
        stack.call(reqwest::Method::DELETE, &format!("/v1/decks/{deck}/media/gone.png"), Some(&token), None).await?;
    assert_eq!((status, body["removed"].as_u64()), (200, Some(40)), "{body}");
    let (_, dl) =
        stack.post("/v1/downloads", &stack.token("download"), json!({"deck": deck, "filenames": ["gone.png"]})).await?;
    assert_eq!(dl["unavailable"][0]["reason"], "unknown", "{dl}");
    assert_eq!(ref_count(&stack, &h).await?, Some(0));
    Ok(())
}
