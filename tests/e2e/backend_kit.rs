//! The backend kit against the local stack and a Postgres holding AnkiCollab's tables: its tokens
//! pass the media server's checks, its references client batches and is idempotent, and its events
//! keep the media server equal to what the notes use, through outages and repeats.

use std::time::Duration;

use ankicollab_media_backend::{
    decks, Error, FileRef, MediaSync, NoteMedia, ReferencesClient, ReportedFile, Retry, TokenIssuer,
};
use integration_tests::{deck, pg, sha256_hex, unique_bytes, unique_png, Stack};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_postgres::NoTls;

async fn db() -> anyhow::Result<tokio_postgres::Client> {
    let live = pg::live().await?;
    pg::ankicollab_schema(live.pool()).await?;
    let url = std::env::var("DATABASE_URL")?;
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    ankicollab_media_backend::migrate(&client).await?;
    Ok(client)
}

fn issuer(stack: &Stack) -> anyhow::Result<TokenIssuer> {
    Ok(TokenIssuer::new(&stack.secret)?)
}

fn quick() -> Retry {
    Retry { attempts: 3, base: Duration::from_millis(10), cap: Duration::from_millis(40) }
}

async fn listing(stack: &Stack, d: &str) -> anyhow::Result<Vec<String>> {
    let token = stack.token("download");
    let (status, page) = stack.call(Method::POST, "/v1/downloads", Some(&token), Some(json!({"deck": d}))).await?;
    anyhow::ensure!(status == 200, "{page}");
    let mut names: Vec<String> = page["files"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(page["unavailable"].as_array().into_iter().flatten())
        .filter_map(|f| f["filename"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn kit_tokens_pass_the_media_servers_checks() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let kit = issuer(&stack)?;
    let d = deck("kittok");
    let call = |token: String, method: Method, path: String, body: Option<Value>| {
        let stack = &stack;
        async move { stack.call(method, &path, Some(&token), body).await }
    };
    let user = kit.for_user(42).token;
    let (status, _) = call(user.clone(), Method::POST, "/v1/downloads".into(), Some(json!({"deck": d}))).await?;
    assert_eq!(status, 200);
    // A user token cannot set references or maintain a deck.
    let (status, _) = call(user, Method::POST, "/v1/references".into(), Some(json!({"deck": d, "notes": []}))).await?;
    assert_eq!(status, 403);
    let (status, _) =
        call(kit.for_maintainer(42, std::slice::from_ref(&d)).token, Method::GET, format!("/v1/decks/{d}/media"), None)
            .await?;
    assert_eq!(status, 200);
    let (status, _) =
        call(kit.for_backend().token, Method::POST, "/v1/references".into(), Some(json!({"deck": d, "notes": []})))
            .await?;
    assert_eq!(status, 200);
    // Signed with another secret, or for another audience: refused.
    let stranger = TokenIssuer::new("not the secret")?.for_user(42).token;
    let (status, body) = call(stranger, Method::POST, "/v1/downloads".into(), Some(json!({"deck": d}))).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let other = issuer(&stack)?.names("ankicollab", "someone-else").for_user(42).token;
    let (status, body) = call(other, Method::POST, "/v1/downloads".into(), Some(json!({"deck": d}))).await?;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("aud"), "{body}");
    Ok(())
}

#[tokio::test]
async fn the_references_client_batches_retries_and_changes_nothing_twice() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let refs = ReferencesClient::new(stack.api.clone(), issuer(&stack)?).with_retry(quick());
    let d = deck("kitrefs");
    let png = unique_png();
    let hash = sha256_hex(&png);
    let notes: Vec<NoteMedia> = (0..250)
        .map(|i| NoteMedia { note_id: format!("{i}"), media: vec![FileRef::new(format!("f{i}.png"), hash.clone())] })
        .collect();
    let first = refs.set_notes(&d, &notes).await?;
    assert_eq!((first.notes, first.added, first.removed), (250, 250, 0));
    let again = refs.set_notes(&d, &notes).await?;
    assert_eq!((again.added, again.removed), (0, 0), "a replay changes nothing");
    assert_eq!(listing(&stack, &d).await?.len(), 250);
    let ids: Vec<String> = (0..250).map(|i| i.to_string()).collect();
    assert_eq!(refs.remove_notes(&d, &ids).await?.removed, 250);
    assert!(listing(&stack, &d).await?.is_empty());

    // Refusals are returned at once, with the server's code; no answer at all is retried, then
    // reported as unavailable.
    let bad = vec![NoteMedia { note_id: "x".into(), media: vec![FileRef::new("../x.png", hash.clone())] }];
    match refs.set_notes(&d, &bad).await {
        Err(Error::Refused { status: 400, code, .. }) => assert_eq!(code, "bad_request"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let nowhere = ReferencesClient::new("http://127.0.0.1:9", issuer(&stack)?).with_retry(quick());
    let err = nowhere.set_notes(&d, &notes[..1]).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)) && err.is_transient(), "{err}");
    Ok(())
}

/// A deck tree of AnkiCollab's: root (with a subdeck) and a base deck whose note the root inherits.
struct Decks {
    root: String,
    base: String,
    sub_id: i64,
    base_id: i64,
    root_id: i64,
}

async fn decks(db: &tokio_postgres::Client) -> anyhow::Result<Decks> {
    let (root, sub, base) = (deck("kroot"), deck("ksub"), deck("kbase"));
    let insert = "INSERT INTO anki.decks (name, human_hash, parent) VALUES ($1::text, $1::text, $2) RETURNING id";
    let root_id: i64 = db.query_one(insert, &[&root, &None::<i64>]).await?.get(0);
    let sub_id: i64 = db.query_one(insert, &[&sub, &Some(root_id)]).await?.get(0);
    let base_id: i64 = db.query_one(insert, &[&base, &None::<i64>]).await?.get(0);
    Ok(Decks { root, base, sub_id, base_id, root_id })
}

async fn note(db: &tokio_postgres::Client, deck: i64, content: &str) -> anyhow::Result<(i64, String)> {
    let guid = sha256_hex(&unique_bytes(8))[..12].to_string();
    let id: i64 = db
        .query_one("INSERT INTO anki.notes (guid, deck, reviewed) VALUES ($1, $2, true) RETURNING id", &[&guid, &deck])
        .await?
        .get(0);
    db.execute(
        "INSERT INTO anki.fields (note, position, content, reviewed) VALUES ($1, 0, $2, true)",
        &[&id, &content],
    )
    .await?;
    Ok((id, guid))
}

#[tokio::test]
async fn events_follow_the_deck_rule_and_survive_outages_and_repeats() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let mut db = db().await?;
    let t = decks(&db).await?;
    let (sub_note, sub_guid) = note(&db, t.sub_id, r#"<img src="sub.png">"#).await?;
    let (base_note, base_guid) = note(&db, t.base_id, "[sound:base.mp3]").await?;
    let (heir, _) = note(&db, t.root_id, "inherits").await?;
    db.execute(
        "INSERT INTO anki.note_inheritance (subscriber_note_id, base_note_id) VALUES ($1, $2)",
        &[&heir, &base_note],
    )
    .await?;
    assert_eq!(decks::root_of_deck(&db, &t.root).await?.as_deref(), Some(t.root.as_str()));
    let keys = decks::deck_keys_of_notes(&db, &[sub_note, base_note]).await?;
    assert_eq!(keys[&sub_note].iter().collect::<Vec<_>>(), [&t.root]);
    assert_eq!(keys[&base_note].len(), 2, "the base note belongs to its own root and the inheriting one");

    let (h1, h2) = (sha256_hex(&unique_bytes(16)), sha256_hex(&unique_bytes(16)));
    let report = |guid: &str, filename: &str, sha: &str| ReportedFile {
        note_guid: guid.into(),
        filename: filename.into(),
        sha256: sha.into(),
    };

    // The media server is down while the suggestion is reported: the report is kept, nothing is
    // recorded as told, and the error says to try again.
    let down = MediaSync::new(ReferencesClient::new("http://127.0.0.1:9", issuer(&stack)?).with_retry(quick()));
    let err =
        down.suggestion_submitted(&mut db, Some(1), &t.root, &[report(&sub_guid, "sub.png", &h1)]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let told: i64 =
        db.query_one("SELECT count(*) FROM anki.media_note_decks WHERE note_id = $1", &[&sub_note]).await?.get(0);
    assert_eq!(told, 0);

    // Back up: reported again (the plugin retries), and the base deck's media too.
    let media = MediaSync::new(ReferencesClient::new(stack.api.clone(), issuer(&stack)?).with_retry(quick()));
    let r = media.suggestion_submitted(&mut db, Some(1), &t.root, &[report(&sub_guid, "sub.png", &h1)]).await?;
    assert_eq!((r.recorded, r.waiting), (1, 0));
    media.suggestion_submitted(&mut db, None, &t.base, &[report(&base_guid, "base.mp3", &h2)]).await?;
    assert_eq!(listing(&stack, &t.root).await?, ["base.mp3", "sub.png"], "the subdeck's and the inherited note's");
    assert_eq!(listing(&stack, &t.base).await?, ["base.mp3"]);
    // Repeats change nothing.
    let again = media.sync_notes(&mut db, &[sub_note, base_note, heir]).await?;
    assert_eq!((again.added, again.removed), (0, 0));

    // A file not in any field is pruned at approval; template media (`_x`) stay.
    media
        .suggestion_submitted(
            &mut db,
            Some(1),
            &t.root,
            &[report(&sub_guid, "stale.png", &h2), report(&sub_guid, "_font.woff", &h2)],
        )
        .await?;
    assert_eq!(listing(&stack, &t.root).await?, ["_font.woff", "base.mp3", "stale.png", "sub.png"]);
    media.suggestion_approved(&mut db, &[sub_note]).await?;
    assert_eq!(listing(&stack, &t.root).await?, ["_font.woff", "base.mp3", "sub.png"]);

    // The inheritance goes: the root no longer has the base note's media.
    db.execute("DELETE FROM anki.note_inheritance WHERE subscriber_note_id = $1", &[&heir]).await?;
    media.sync_notes(&mut db, &[base_note]).await?;
    assert_eq!(listing(&stack, &t.root).await?, ["_font.woff", "sub.png"]);

    // Files reported for a note that does not exist yet wait for it.
    let later_guid = "later-note";
    let w = media.suggestion_submitted(&mut db, Some(1), &t.root, &[report(later_guid, "later.png", &h1)]).await?;
    assert_eq!((w.recorded, w.waiting), (0, 1));
    db.execute("INSERT INTO anki.notes (guid, deck, reviewed) VALUES ($1, $2, true)", &[&later_guid, &t.sub_id])
        .await?;
    media.deck_created(&mut db, &t.root).await?;
    assert!(listing(&stack, &t.root).await?.contains(&"later.png".to_string()));

    // The deck is deleted (its tree and notes go by cascade): everything it held goes.
    db.execute("DELETE FROM anki.decks WHERE id = $1", &[&t.root_id]).await?;
    media.deck_deleted(&mut db, &t.root).await?;
    assert!(listing(&stack, &t.root).await?.is_empty());
    let left: i64 = db
        .query_one("SELECT count(*) FROM anki.media_note_files WHERE note_id = ANY($1)", &[&vec![sub_note, heir]])
        .await?
        .get(0);
    assert_eq!(left, 0, "the kit forgets notes that are gone");
    Ok(())
}
