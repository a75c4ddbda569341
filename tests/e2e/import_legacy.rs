//! The import of AnkiCollab's existing media (`importer/`, `make import-legacy`), end to end: a
//! source Postgres with today's tables and a second LocalStack bucket of MD5-keyed objects, the
//! binary run as an operator runs it, killed mid-run and run again, then once more; and today's
//! manifest answered from the new store for plugins not updated yet.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ankicollab_media_backend::legacy::{self, Redirects};
use ankicollab_media_backend::routes::{Connection, MediaRoutes};
use ankicollab_media_backend::{MediaSync, ReferencesClient, TokenIssuer};
use anyhow::Context;
use integration_tests::{deck, pg, sha256_hex, unique_png, Stack};
use md5::{Digest as _, Md5};
use reqwest::Method;
use serde_json::{json, Value};

struct Source {
    url: String,
    db: tokio_postgres::Client,
    bucket: String,
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

impl Source {
    async fn new(stack: &Stack) -> anyhow::Result<Self> {
        let (_, url) = pg::new_database("legacy").await?;
        let db = connect(&url).await?;
        db.batch_execute(include_str!("../../backend-kit/tests/ankicollab_today.sql")).await?;
        let bucket = deck("legacy-media").to_lowercase();
        stack.s3.create_bucket().bucket(&bucket).send().await?;
        Ok(Self { url, db, bucket })
    }

    async fn deck(&self, hash: &str, parent: Option<i64>) -> anyhow::Result<i64> {
        Ok(self
            .db
            .query_one(
                "INSERT INTO anki.decks (name, human_hash, parent) VALUES ($1::text, $1::text, $2) RETURNING id",
                &[&hash, &parent],
            )
            .await?
            .get(0))
    }

    async fn note(&self, deck: i64, deleted: bool) -> anyhow::Result<i64> {
        let guid = sha256_hex(&integration_tests::unique_bytes(8))[..10].to_string();
        Ok(self
            .db
            .query_one(
                "INSERT INTO anki.notes (guid, deck, reviewed, deleted) VALUES ($1, $2, true, $3) RETURNING id",
                &[&guid, &deck, &deleted],
            )
            .await?
            .get(0))
    }

    /// A media_files row for `bytes` (its MD5, unless `md5` says otherwise), its object unless
    /// `object` is false, and references `(note, file_name)`.
    async fn file(
        &self,
        stack: &Stack,
        bytes: &[u8],
        md5: Option<&str>,
        object: bool,
        refs: &[(Option<i64>, &str)],
    ) -> anyhow::Result<i64> {
        let hash = md5.map(str::to_owned).unwrap_or_else(|| md5_hex(bytes));
        let id: i64 = self
            .db
            .query_one(
                "INSERT INTO anki.media_files (hash, file_size) VALUES ($1, $2) RETURNING id",
                &[&hash, &(bytes.len() as i64)],
            )
            .await?
            .get(0);
        if object {
            let key = format!("{}/{}", &hash[..2], hash);
            stack.s3.put_object().bucket(&self.bucket).key(key).body(bytes.to_vec().into()).send().await?;
        }
        for (note, name) in refs {
            self.db
                .execute(
                    "INSERT INTO anki.media_references (media_id, note_id, file_name) VALUES ($1, $2, $3)",
                    &[&id, note, name],
                )
                .await?;
        }
        Ok(id)
    }

    /// The importer, as `make import-legacy` starts it, against the local stack.
    fn importer(&self, report: &std::path::Path, parallel: usize) -> Command {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
            format!("{}/.cache/ankicollab-media/target", std::env::var("HOME").unwrap_or_default())
        });
        let mut c = Command::new(format!("{target}/debug/import-legacy"));
        c.args(["--parallel", &parallel.to_string(), "--report"])
            .arg(report)
            .env("SOURCE_DATABASE_URL", &self.url)
            .env("SOURCE_BUCKET", &self.bucket)
            .env("SOURCE_ENDPOINT", std::env::var("AWS_ENDPOINT_URL_S3").unwrap_or_default())
            .env("MEDIA_API_URL", std::env::var("API_URL").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

fn summary(report: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(report)?;
    let last = text.lines().last().context("an empty report")?;
    let v: Value = serde_json::from_str(last)?;
    anyhow::ensure!(v["kind"] == "summary", "the report ends with {last}");
    Ok(v["counts"].clone())
}

fn lines(report: &std::path::Path, kind: &str) -> anyhow::Result<Vec<Value>> {
    Ok(std::fs::read_to_string(report)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == kind)
        .collect())
}

/// The same kind of file as `bytes`, with a hash of its own: a PNG gets one pixel changed, an MP3
/// an ID3v1 tag, anything else a trailing comment.
fn unique_copy(path: &str, bytes: Vec<u8>) -> Vec<u8> {
    let tag = &sha256_hex(&integration_tests::unique_bytes(16))[..30];
    if path.ends_with(".png") {
        let mut img = image::load_from_memory(&bytes).expect("a corpus PNG decodes").to_rgba8();
        img.get_pixel_mut(0, 0).0 = [tag.as_bytes()[0], tag.as_bytes()[1], tag.as_bytes()[2], 255];
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).expect("PNG encodes");
        return out.into_inner();
    }
    let mut out = bytes;
    if path.ends_with(".mp3") {
        out.extend_from_slice(b"TAG");
        out.extend_from_slice(tag.as_bytes());
        out.resize(out.len() + 125 - 30, 0);
    } else {
        out.extend_from_slice(format!("<!-- {tag} -->").as_bytes());
    }
    out
}

/// filename → (url, stored_hash) of what `/v1/downloads` serves for `deck` among `names`.
async fn served(stack: &Stack, deck: &str, names: &[String]) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let token = stack.token("download");
    let mut out = BTreeMap::new();
    for chunk in names.chunks(1000) {
        let (status, page) = stack
            .call(Method::POST, "/v1/downloads", Some(&token), Some(json!({"deck": deck, "filenames": chunk})))
            .await?;
        anyhow::ensure!(status == 200, "{page}");
        for f in page["files"].as_array().into_iter().flatten() {
            out.insert(
                f["filename"].as_str().unwrap_or_default().to_owned(),
                (
                    f["url"].as_str().unwrap_or_default().to_owned(),
                    f["stored_hash"].as_str().unwrap_or_default().to_owned(),
                ),
            );
        }
    }
    Ok(out)
}

#[tokio::test]
async fn the_import_brings_every_referenced_file_survives_a_kill_and_changes_nothing_the_third_time(
) -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let src = Source::new(&stack).await?;
    let limits = shared::config::Config::from_env()?.limits;
    let (root_hash, sub_hash) = (deck("lroot"), deck("lsub"));
    src.db
        .execute(
            "INSERT INTO public.users (id, username, password) VALUES (1, 'owner', 'x') ON CONFLICT DO NOTHING",
            &[],
        )
        .await?;
    let root = src.deck(&root_hash, None).await?;
    let sub = src.deck(&sub_hash, Some(root)).await?;
    let (n1, n2, n4) = (src.note(sub, false).await?, src.note(root, false).await?, src.note(root, false).await?);
    let n3 = src.note(sub, true).await?;
    // Copies no other test holds: the corpus round-trip tests forget these hashes while we run.
    let corpus = |p: &str| std::fs::read(stack.corpus.join(p)).map(|b| unique_copy(p, b));

    // What each live name should serve: the bytes our processing makes of the original.
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let camera = corpus("real/camera.png")?;
    let voice = corpus("real/tts-1-0.mp3")?;
    src.file(&stack, &camera, None, true, &[(Some(n1), "camera.png"), (Some(n2), "camera-copy.png")]).await?;
    src.file(&stack, &voice, None, true, &[(Some(n2), "voice.mp3")]).await?;
    for (name, bytes) in [("camera.png", &camera), ("camera-copy.png", &camera), ("voice.mp3", &voice)] {
        expected.insert(
            name.into(),
            shared::process::content(bytes.clone(), &limits).map_err(|r| anyhow::anyhow!("{r:?}"))?.stored,
        );
    }
    let missing = src.file(&stack, &unique_png(), None, false, &[(Some(n1), "missing.png")]).await?;
    let wrong_bytes = unique_png();
    let wrong =
        src.file(&stack, &wrong_bytes, Some(&md5_hex(b"other bytes")), true, &[(Some(n4), "wrong.png")]).await?;
    let refused =
        src.file(&stack, &corpus("hostile/html-named-as.jpg")?, None, true, &[(Some(n4), "refused.jpg")]).await?;
    src.file(&stack, &unique_png(), None, true, &[(Some(n3), "deleted.png")]).await?;
    src.file(&stack, &unique_png(), None, true, &[]).await?;
    src.file(&stack, &unique_png(), None, true, &[(None, "orphan.png")]).await?;
    // Enough ordinary files for a run to be killed in the middle.
    for i in 0..120 {
        let png = unique_png();
        let name = format!("bulk-{i:03}.png");
        let note = src.note(if i % 2 == 0 { sub } else { root }, false).await?;
        src.file(&stack, &png, None, true, &[(Some(note), &name)]).await?;
        expected.insert(name, shared::process::content(png, &limits).map_err(|r| anyhow::anyhow!("{r:?}"))?.stored);
    }

    // First run, killed (SIGKILL) once some files are done.
    let dir = std::env::temp_dir().join(deck("import-reports"));
    let first = dir.join("first.jsonl");
    let mut child = src.importer(&first, 2).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: i64 =
            src.db.query_one("SELECT count(*) FROM anki.media_legacy_files", &[]).await.map(|r| r.get(0)).unwrap_or(0);
        if done >= 10 {
            break;
        }
        anyhow::ensure!(child.try_wait()?.is_none(), "the import finished before it could be killed");
        anyhow::ensure!(Instant::now() < deadline, "the import made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill()?;
    child.wait()?;
    let after_kill: i64 = src.db.query_one("SELECT count(*) FROM anki.media_legacy_files", &[]).await?.get(0);
    anyhow::ensure!(after_kill < 122, "killed too late to prove anything ({after_kill} files done)");

    // Second run: picks up where the first stopped, and ends complete.
    let second = dir.join("second.jsonl");
    let out = src.importer(&second, 4).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "problems make the exit status 1: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&second)?;
    assert_eq!(s["references_without_note"], 1, "the orphan reference is reported: {s}");
    assert_eq!(s["imported"].as_u64().unwrap_or(0) + s["already_there"].as_u64().unwrap_or(0), 122, "{s}");
    assert!(s["already_there"].as_u64().unwrap_or(0) >= after_kill as u64 - 3, "finished files are not redone: {s}");
    assert_eq!(
        (s["missing"].as_u64(), s["wrong_md5"].as_u64(), s["refused"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(s["unreferenced"], 3, "the deleted note's, the unused and the orphan's: {s}");
    let line = stdout.lines().last().unwrap_or_default();
    assert!(
        line.starts_with(&format!(
            "imported {}, already there {}, refused 1, missing 1, unreferenced 3",
            s["imported"], s["already_there"]
        )),
        "{line}"
    );
    // Every problem names its ids and reason.
    let problems = lines(&second, "problem")?;
    let reasons: BTreeMap<i64, String> = problems
        .iter()
        .map(|p| (p["media_id"].as_i64().unwrap_or(0), p["reason"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(reasons[&missing], "missing_object");
    assert_eq!(reasons[&wrong], "wrong_md5");
    assert_eq!(reasons[&refused], "refused");
    assert!(problems.iter().all(|p| p["references"].as_array().is_some_and(|r| !r.is_empty())), "{problems:?}");
    // The MD5 → SHA-256 map, in the report and in the database.
    let mapped: i64 = src
        .db
        .query_one(
            "SELECT count(*) FROM anki.media_legacy_files WHERE md5 = $1 AND sha256 = $2",
            &[&md5_hex(&camera), &sha256_hex(&camera)],
        )
        .await?
        .get(0);
    assert_eq!(mapped, 1);
    assert!(lines(&second, "file")?.iter().any(|f| f["md5"] == md5_hex(&camera) && f["sha256"] == sha256_hex(&camera)));

    // Every referenced name downloads from the root deck with the bytes our processing gives.
    let names: Vec<String> = expected.keys().cloned().collect();
    let urls = served(&stack, &root_hash, &names).await?;
    assert_eq!(urls.len(), expected.len(), "served: {:?}", urls.keys().collect::<Vec<_>>());
    for (name, bytes) in &expected {
        let body = stack.http.get(&urls[name].0).send().await?.bytes().await?;
        assert_eq!(&body[..], &bytes[..], "{name}");
    }
    assert!(served(&stack, &root_hash, &["deleted.png".into(), "missing.png".into()]).await?.is_empty());

    // A third run: nothing imported, no reference changes; only the object whose MD5 was wrong is
    // read again (problems are tried again each run, finished files never).
    let before = served(&stack, &root_hash, &names).await?;
    let third = dir.join("third.jsonl");
    let out = src.importer(&third, 4).output()?;
    assert_eq!(out.status.code(), Some(1));
    let s = summary(&third)?;
    assert_eq!((s["imported"].as_u64(), s["already_there"].as_u64()), (Some(0), Some(122)), "{s}");
    assert_eq!(
        (s["references_imported"].as_u64(), s["bytes_read"].as_u64()),
        (Some(0), Some(wrong_bytes.len() as u64)),
        "{s}"
    );
    assert_eq!(served(&stack, &root_hash, &names).await?.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn old_plugins_get_todays_manifest_from_the_new_store() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let src = Source::new(&stack).await?;
    let (root_hash, sub_hash) = (deck("mroot"), deck("msub"));
    let root = src.deck(&root_hash, None).await?;
    src.deck(&sub_hash, Some(root)).await?;
    let png = unique_png();
    let hash = sha256_hex(&png);
    stack.upload_processed("cell.png", &png).await?;
    stack.references(&root_hash, json!([{"note_id": "1", "media": [{"filename": "cell.png", "hash": hash}]}])).await?;

    // The backend's redirect route, on the kit.
    let issuer = TokenIssuer::new(&stack.secret)?;
    let refs = ReferencesClient::new(stack.api.clone(), issuer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/media/legacy-download", listener.local_addr()?);
    let redirects = Redirects::new(&base, b"backend secret");
    let routes = MediaRoutes::new(
        MediaSync::new(ReferencesClient::new(stack.api.clone(), issuer.clone())),
        issuer,
        || Box::pin(async { Err::<Connection, _>("no database here".into()) }),
        |_| Box::pin(async { Ok(None) }),
    )
    .legacy_downloads(redirects.clone());
    let app: axum::Router = routes.router();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Asked with the subdeck's hash, as an old plugin may: the root's files.
    let names = vec!["cell.png".to_string(), "nope.png".to_string()];
    let m = legacy::manifest(&refs, &src.db, 7, &sub_hash, &names, Some(&redirects)).await?;
    assert_eq!((m.file_count, m.files.len()), (1, 1));
    assert_eq!(m.files[0].filename, "cell.png");
    assert!(m.expires_at.is_some());
    let shape = serde_json::to_value(&m)?;
    assert_eq!(shape["files"][0].as_object().map(|o| o.len()), Some(2), "{shape}");

    // The old plugin's session sends its Authorization header with every GET: the redirect drops
    // it on the way to storage, and the bytes come back.
    let old_plugin = reqwest::Client::builder()
        .default_headers([(reqwest::header::AUTHORIZATION, "Bearer ankicollab-session".parse()?)].into_iter().collect())
        .build()?;
    let resp = old_plugin.get(&m.files[0].download_url).send().await?;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await?;
    assert_eq!(
        sha256_hex(&body),
        stack
            .record(&hash)
            .await?
            .and_then(|r| r.get("stored_hash").and_then(|v| v.as_s().ok()).cloned())
            .unwrap_or_else(|| hash.clone())
    );
    // A forged redirect is not followed anywhere.
    let forged = format!("{base}?u=aHR0cHM6Ly9ldmlsLmV4YW1wbGUv&s=AAAA");
    let r = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?.get(forged).send().await?;
    assert_eq!(r.status(), 404);
    Ok(())
}
