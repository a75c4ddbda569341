//! The Postgres mirror (sync-postgres) on the local stack: moto's DynamoDB streams, followed by the
//! local gateway as Lambda's event source mapping would, into a real Postgres.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use integration_tests::pg;
use integration_tests::{deck, sha256_hex, unique_png, Stack};
use serde_json::{json, Value};
use shared::error::StoreError;
use shared::hash::Sha256Hash;
use shared::store::mirror::{Change, FileRow, Key, Mirror, Row, Snapshot};

fn media(files: &[(&str, &str)]) -> Value {
    Value::Array(files.iter().map(|(f, h)| json!({"filename": f, "hash": h})).collect())
}

/// The rows of `snapshot` that are about these decks or hashes.
fn ours(snapshot: &Snapshot, decks: &[&str], hashes: &[String]) -> BTreeMap<Key, Row> {
    snapshot
        .rows
        .iter()
        .filter(|(k, _)| match k {
            Key::File { deck, .. } => decks.contains(&deck.as_str()),
            Key::Stored(h) => hashes.contains(&h.to_hex()),
        })
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect()
}

/// What DynamoDB holds now about these decks or hashes, as rows.
async fn dynamodb_rows(app: &shared::App, decks: &[&str], hashes: &[String]) -> anyhow::Result<BTreeMap<Key, Row>> {
    let mut out = BTreeMap::new();
    for f in app.decks.scan_all().await? {
        if decks.contains(&f.deck.as_str()) {
            if let Some(row) = shared::sync::file_row(f) {
                out.insert(Row::File(row.clone()).key(), Row::File(row));
            }
        }
    }
    // Whole records (`get_many` leaves out bookkeeping such as the reference count).
    for hash in hashes {
        if let Some(row) = app.media.get(&Sha256Hash::parse(hash)?).await?.and_then(shared::sync::stored_row) {
            out.insert(Key::Stored(row.hash), Row::Stored(row));
        }
    }
    Ok(out)
}

/// A mirror that crashes now and then: before applying (the batch dies mid-way) and after
/// applying (the write committed but the acknowledgement was lost).
struct Crashing<M> {
    inner: M,
    calls: AtomicUsize,
    applied: AtomicUsize,
}

impl<M> Crashing<M> {
    fn new(inner: M) -> Self {
        Self { inner, calls: AtomicUsize::new(0), applied: AtomicUsize::new(0) }
    }
}

#[async_trait]
impl<M: Mirror> Mirror for Crashing<M> {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn apply(&self, change: &Change) -> Result<bool, StoreError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if call % 7 == 3 {
            return Err(StoreError::new("test", "crashed before applying"));
        }
        let applied = self.inner.apply(change).await?;
        if applied {
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
        if call % 7 == 5 {
            return Err(StoreError::new("test", "crashed after applying"));
        }
        Ok(applied)
    }
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.inner.snapshot().await
    }
    async fn repair(&self, key: &Key, seen: Option<&str>, row: Option<&Row>) -> Result<bool, StoreError> {
        self.inner.repair(key, seen, row).await
    }
    async fn resolve_deck_ids(&self) -> Result<u64, StoreError> {
        self.inner.resolve_deck_ids().await
    }
}

/// A mirror that never fails and counts what it applied.
fn counting<M: Mirror>(inner: M) -> Crashing<M> {
    Crashing { inner, calls: AtomicUsize::new(1), applied: AtomicUsize::new(0) }
}

#[tokio::test]
async fn stream_duplicates_reordering_and_crashes_all_converge_to_dynamodb() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let app = shared::App::from_env().await?;
    let d = deck("sync");
    let files: Vec<Vec<u8>> = (0..4).map(|_| unique_png()).collect();
    let h: Vec<String> = files.iter().map(|b| sha256_hex(b)).collect();
    stack.upload_processed("f0.png", &files[0]).await?;
    stack.upload_processed("f1.png", &files[1]).await?;
    // Rows are created, changed and removed: notes come and go, files leave the deck.
    let steps = [
        json!([{"note_id": "n1", "media": media(&[("f0.png", &h[0]), ("f1.png", &h[1])])},
               {"note_id": "n2", "media": media(&[("f0.png", &h[0]), ("f2.png", &h[2])])},
               {"note_id": "n3", "media": media(&[("f3.png", &h[3])])}]),
        json!([{"note_id": "n1", "media": media(&[("f1.png", &h[1])])}, {"note_id": "n3", "media": []}]),
        json!([{"note_id": "n2", "media": media(&[("f0.png", &h[0]), ("f2.png", &h[2]), ("f3.png", &h[3])])}]),
        json!([{"note_id": "n4", "media": media(&[("f0.png", &h[0])])}, {"note_id": "n2", "media": []}]),
    ];
    for step in steps {
        stack.references(&d, step).await?;
    }
    let records = pg::stream_records().await?;
    println!("{} stream records", records.len());

    // In order, in batches of 100, as Lambda delivers them.
    let in_order = pg::fresh("inorder").await?;
    pg::deliver(&in_order, &records, 100).await?;
    let expected = in_order.snapshot().await?;

    // Every record twice, in a shuffled order.
    let shuffled_mirror = pg::fresh("shuffled").await?;
    let mut shuffled: Vec<_> = records.iter().chain(records.iter()).cloned().collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..shuffled.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        shuffled.swap(i, (state % (i as u64 + 1)) as usize);
    }
    pg::deliver(&shuffled_mirror, &shuffled, 37).await?;
    assert_eq!(shuffled_mirror.snapshot().await?.rows, expected.rows, "shuffled duplicates diverged");

    // Crashes mid-batch, before and after committing; each failed batch is resumed.
    let crashing = Crashing::new(pg::fresh("crashing").await?);
    let deliveries = pg::deliver(&crashing, &records, 100).await?;
    assert!(deliveries > records.len().div_ceil(100), "the crashes never happened");
    assert_eq!(crashing.snapshot().await?.rows, expected.rows, "resuming after crashes diverged");

    // Replaying everything again applies nothing and changes nothing.
    let again = counting(in_order);
    pg::deliver(&again, &records, 100).await?;
    assert_eq!(again.applied.load(Ordering::Relaxed), 0, "a replayed record was applied");
    assert_eq!(again.snapshot().await?, expected);

    // And the result is what DynamoDB holds.
    let want = dynamodb_rows(&app, &[&d], &h).await?;
    assert_eq!(ours(&expected, &[&d], &h), want);
    let files_now: Vec<_> = want.keys().filter(|k| matches!(k, Key::File { .. })).collect();
    assert_eq!(files_now.len(), 2, "only f0 and f1 are in use at the end: {files_now:?}");
    Ok(())
}

#[tokio::test]
async fn lookup_query_answers_what_dynamodb_knows() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let live = pg::live().await?;
    // The stack's database holds AnkiCollab's tables too, as AnkiCollab's database will.
    pg::ankicollab_schema(live.pool()).await?;
    let d = deck("lookup");
    let deck_id = pg::ankicollab_deck(live.pool(), &d, None).await?;
    let png = unique_png();
    let hash = sha256_hex(&png);
    stack.upload_processed("cell.png", &png).await?;
    stack.references(&d, json!([{"note_id": "1", "media": media(&[("cell.png", &hash)])}])).await?;
    let stored_key = stack.record(&hash).await?.and_then(|r| r.get("stored_key").and_then(|v| v.as_s().ok()).cloned());
    assert_eq!(stored_key.as_deref(), Some(format!("media/{hash}").as_str()));

    // The query from the issue, verbatim, with AnkiCollab's numeric deck id and its schema on the
    // search path.
    let lookup = || async {
        let mut conn = live.pool().acquire().await?;
        sqlx::query("SET search_path TO anki, public").execute(&mut *conn).await?;
        let keys: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT s3_key FROM stored_media_files WHERE hash IN (SELECT hash FROM anki.media WHERE deck = $1 AND filename = $2)",
        )
        .bind(deck_id)
        .bind("cell.png")
        .fetch_all(&mut *conn)
        .await?;
        anyhow::Ok(keys)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while lookup().await? != vec![stored_key.clone()] {
        anyhow::ensure!(Instant::now() < deadline, "the lookup never answered {stored_key:?}: {:?}", lookup().await?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The website's view: which notes use it; our key is there too.
    let (notes, key): (i64, String) =
        sqlx::query_as("SELECT notes, deck_key FROM anki.media WHERE deck = $1 AND filename = 'cell.png'")
            .bind(deck_id)
            .fetch_one(live.pool())
            .await?;
    assert_eq!((notes, key), (1, d.clone()));

    // Once no note uses the file, the deck no longer maps it.
    stack.references(&d, json!([{"note_id": "1", "media": []}])).await?;
    while !lookup().await?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "the lookup still answers after the note let go of the file");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test]
async fn fixture_event_applies_once_and_older_records_lose() -> anyhow::Result<()> {
    let app = shared::App::from_env().await?;
    let mirror = pg::fresh("fixture").await?;
    let tables = pg::tables()?;
    let mut event: Value = serde_json::from_str(include_str!("../../events/sync-postgres.json"))?;
    // The fixture names the default local tables; point it at this stack's.
    for r in event["Records"].as_array_mut().into_iter().flatten() {
        let table = if r["dynamodb"]["Keys"].get("hash").is_some() { &tables.media } else { &tables.deck_files };
        r["eventSourceARN"] =
            json!(format!("arn:aws:dynamodb:us-east-1:000000000000:table/{table}/stream/2026-11-22T00:00:00.000"));
    }
    let out = shared::sync::handle(app.media.as_ref(), app.decks.as_ref(), &mirror, &tables, event.clone()).await?;
    assert_eq!(out, json!({"batchItemFailures": []}));
    let first = mirror.snapshot().await?;
    assert_eq!(first.rows.len(), 2, "{first:#?}");
    let Some(Row::Stored(stored)) = first.rows.values().find(|r| matches!(r, Row::Stored(_))) else {
        anyhow::bail!("no stored row");
    };
    assert_eq!((stored.status.as_str(), stored.reference_count), ("ready", 1));

    // The same event again changes nothing; an older record of the same items loses.
    shared::sync::handle(app.media.as_ref(), app.decks.as_ref(), &mirror, &tables, event.clone()).await?;
    assert_eq!(mirror.snapshot().await?, first);
    let mut older = event.clone();
    for r in older["Records"].as_array_mut().into_iter().flatten() {
        r["dynamodb"]["SequenceNumber"] = json!("1");
        r["eventName"] = json!("REMOVE");
    }
    shared::sync::handle(app.media.as_ref(), app.decks.as_ref(), &mirror, &tables, older).await?;
    assert_eq!(mirror.snapshot().await?.rows, first.rows);

    // A record from an unknown table fails the batch from there on, and nothing after it is lost.
    let mut foreign = event;
    foreign["Records"][0]["eventSourceARN"] = json!("arn:aws:dynamodb:us-east-1:0:table/elsewhere/stream/x");
    let out = shared::sync::handle(app.media.as_ref(), app.decks.as_ref(), &mirror, &tables, foreign).await?;
    assert_eq!(out["batchItemFailures"].as_array().map(Vec::len), Some(2), "{out}");
    Ok(())
}

#[tokio::test]
async fn migrations_keep_a_legacy_ankicollab_database_and_its_deck_ids() -> anyhow::Result<()> {
    let mirror = pg::empty("legacy").await?;
    let pool = mirror.pool();
    // AnkiCollab's database as it is today, with legacy anki.media rows.
    pg::ankicollab_schema(pool).await?;
    let one = pg::ankicollab_deck(pool, "one-deck", None).await?;
    let two = pg::ankicollab_deck(pool, "two-deck", None).await?;
    sqlx::query("INSERT INTO anki.media (filename, deck) VALUES ('a.png', $1), ('b c.mp3', $1), ('a.png', $2)")
        .bind(one)
        .bind(two)
        .execute(pool)
        .await?;
    let legacy = |sql: &'static str| async move {
        let rows: Vec<(i32, String, Option<i64>)> = sqlx::query_as(sql).fetch_all(pool).await?;
        anyhow::Ok(rows)
    };
    let before = legacy("SELECT id, filename, deck FROM anki.media ORDER BY id").await?;
    mirror.migrate().await?;
    mirror.migrate().await?; // again: nothing to do
    let after = legacy("SELECT id, filename, deck FROM anki.media WHERE deck_key IS NULL ORDER BY id").await?;
    assert_eq!(after, before, "legacy rows, ids and deck ids are untouched");
    let column_type = |column: &'static str| async move {
        let t: String = sqlx::query_scalar(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = 'anki' AND table_name = 'media' AND column_name = $1",
        )
        .bind(column)
        .fetch_one(pool)
        .await?;
        anyhow::Ok(t)
    };
    assert_eq!((column_type("deck").await?, column_type("id").await?), ("bigint".into(), "integer".into()));
    let fk: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_constraint WHERE conname = 'media_deck_fkey'")
        .fetch_one(pool)
        .await?;
    assert_eq!(fk, 1, "AnkiCollab's foreign key to anki.decks stays");
    let snapshot = mirror.snapshot().await?;
    assert_eq!((snapshot.legacy_rows, snapshot.rows.len()), (3, 0), "legacy rows are kept, not compared");

    // The sync writes AnkiCollab's deck id beside our key; it takes a legacy row of the same deck
    // and filename over, id and all; a key with no AnkiCollab deck is kept with no id.
    let hash = Sha256Hash::parse(&sha256_hex(b"a"))?;
    let file = |deck: &str, filename: &str| FileRow {
        deck: deck.into(),
        filename: filename.into(),
        hash,
        notes: 2,
        updated_at: None,
    };
    for (seq, row) in
        [("10", file("one-deck", "a.png")), ("11", file("later-deck", "x.png")), ("12", file("two-deck", "new.png"))]
    {
        let change = Change { key: Row::File(row.clone()).key(), seq: seq.into(), row: Some(Row::File(row)) };
        assert!(mirror.apply(&change).await?);
    }
    type MediaRow = (i32, Option<i64>, Option<String>, String, Option<String>);
    let rows: Vec<MediaRow> =
        sqlx::query_as("SELECT id, deck, deck_key, filename, hash FROM anki.media ORDER BY id").fetch_all(pool).await?;
    let h = Some(hash.to_hex());
    assert_eq!(rows[0], (before[0].0, Some(one), Some("one-deck".into()), "a.png".into(), h.clone()));
    assert_eq!(rows[1..3].iter().map(|r| r.2.clone()).collect::<Vec<_>>(), [None, None], "other legacy rows stay");
    assert_eq!(rows[3].1, None, "later-deck is not an AnkiCollab deck (yet)");
    assert_eq!((rows[3].2.as_deref(), rows[4].1), (Some("later-deck"), Some(two)));
    let snapshot = mirror.snapshot().await?;
    assert_eq!((snapshot.rows.len(), snapshot.unresolved_decks, snapshot.stale_deck_ids), (3, 1, 0));

    // The deck appears in AnkiCollab: reconcile gives the row its id.
    let later = pg::ankicollab_deck(pool, "later-deck", None).await?;
    assert_eq!(mirror.snapshot().await?.stale_deck_ids, 1);
    assert_eq!(mirror.resolve_deck_ids().await?, 1);
    let id: Option<i64> =
        sqlx::query_scalar("SELECT deck FROM anki.media WHERE deck_key = 'later-deck'").fetch_one(pool).await?;
    assert_eq!(id, Some(later));
    let snapshot = mirror.snapshot().await?;
    assert_eq!((snapshot.unresolved_decks, snapshot.stale_deck_ids), (0, 0));

    // Our key's row goes when DynamoDB's does; the taken-over legacy row with it.
    let key = Row::File(file("one-deck", "a.png")).key();
    assert!(mirror.apply(&Change { key, seq: "20".into(), row: None }).await?);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM anki.media").fetch_one(pool).await?;
    assert_eq!(left, 4);
    Ok(())
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_whose_decks_come_later() -> anyhow::Result<()> {
    let mirror = pg::fresh("empty").await?;
    let pool = mirror.pool();
    let hash = Sha256Hash::parse(&sha256_hex(b"e"))?;
    let row = FileRow { deck: "late-root".into(), filename: "e.png".into(), hash, notes: 1, updated_at: None };
    let change = Change { key: Row::File(row.clone()).key(), seq: "5".into(), row: Some(Row::File(row)) };
    assert!(mirror.apply(&change).await?);
    assert_eq!(mirror.snapshot().await?.unresolved_decks, 1, "no anki.decks at all: kept, with no id");
    // AnkiCollab's tables arrive afterwards (the switch), with the deck.
    pg::ankicollab_schema(pool).await?;
    let id = pg::ankicollab_deck(pool, "late-root", None).await?;
    mirror.migrate().await?;
    assert_eq!(mirror.resolve_deck_ids().await?, 1);
    let got: Option<i64> =
        sqlx::query_scalar("SELECT deck FROM anki.media WHERE filename = 'e.png'").fetch_one(pool).await?;
    assert_eq!(got, Some(id));
    Ok(())
}

/// Runs alone (`serial_`): it compares whole tables, which other tests change while they run.
#[tokio::test]
async fn serial_backfill_and_reconcile_repair_what_differs() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let app = shared::App::from_env().await?;
    // Something to mirror, whatever ran before.
    let d = deck("backfill");
    let (a, b) = (unique_png(), unique_png());
    stack.upload_processed("a.png", &a).await?;
    stack
        .references(
            &d,
            json!([{"note_id": "1", "media": media(&[("a.png", &sha256_hex(&a)), ("b.png", &sha256_hex(&b))])}]),
        )
        .await?;

    // The live mirror has converged; a backfill of an empty database gives the same rows.
    let live = pg::live().await?;
    pg::wait_converged(&app, &live).await?;
    let empty = pg::fresh("backfill").await?;
    let first = shared::sync::reconcile_mirror(&*app.media, &*app.decks, &empty, true).await?;
    assert!(first.missing > 0 && first.fixed == first.missing && first.extra == 0, "{first:#?}");
    let again = shared::sync::reconcile_mirror(&*app.media, &*app.decks, &empty, false).await?;
    assert_eq!(again.differences(), 0, "{again:#?}");
    assert_eq!(empty.snapshot().await?.rows, live.snapshot().await?.rows);

    // Break three rows; reconcile names each, and repairs them.
    sqlx::raw_sql(&format!(
        "DELETE FROM anki.media WHERE deck_key = '{d}' AND filename = 'a.png';
         UPDATE anki.stored_media_files SET reference_count = reference_count + 5 WHERE hash = '{}';
         INSERT INTO anki.media (deck_key, filename, hash, notes) VALUES ('{d}', 'ghost.png', '{}', 1);",
        sha256_hex(&b),
        sha256_hex(&b)
    ))
    .execute(empty.pool())
    .await?;
    let found = shared::sync::reconcile_mirror(&*app.media, &*app.decks, &empty, true).await?;
    assert_eq!((found.missing, found.differing, found.extra, found.fixed), (1, 1, 1, 3), "{found:#?}");
    assert_eq!(shared::sync::reconcile_mirror(&*app.media, &*app.decks, &empty, false).await?.differences(), 0);
    Ok(())
}
