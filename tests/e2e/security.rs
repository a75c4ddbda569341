//! Attacks on the API, end to end through the local gateway: forged, expired and wrongly scoped
//! tokens on every route, and hostile filenames, which every route must treat alike.

use integration_tests::{app_with_objects, deck, sha256_hex, unique_bytes, Stack};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use unicode_normalization::UnicodeNormalization;

/// A token with the given claims, signed with `secret` (issued a minute before `exp` at most).
fn forge(secret: &[u8], alg: Algorithm, sub: &str, scope: &str, decks: &[&str], exp: i64) -> String {
    let iat = now().min(exp - 60);
    let claims = json!({"sub": sub, "scope": scope, "decks": decks, "exp": exp, "iat": iat,
        "iss": shared::auth::DEFAULT_ISSUER, "aud": shared::auth::DEFAULT_AUDIENCE});
    encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).expect("encoding a token")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Every route, with a body it would accept from the right caller.
fn routes(deck: &str) -> Vec<(Method, String, Option<Value>, &'static str)> {
    let hash = "0".repeat(64);
    vec![
        (
            Method::POST,
            "/v1/uploads".into(),
            Some(json!({"deck": deck, "files": [{"hash": hash, "size": 10, "filename": "a.png"}]})),
            "upload",
        ),
        (Method::GET, format!("/v1/media/{hash}"), None, "download"),
        (Method::POST, "/v1/downloads".into(), Some(json!({"deck": deck, "filenames": ["a.png"]})), "download"),
        (Method::POST, "/v1/references".into(), Some(json!({"deck": deck, "notes": []})), "references"),
        (Method::GET, format!("/v1/decks/{deck}/media"), None, "maintain"),
        (Method::DELETE, format!("/v1/decks/{deck}/media/a.png"), None, "maintain"),
    ]
}

#[tokio::test]
async fn every_route_refuses_missing_forged_expired_and_misscoped_tokens() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let secret = stack.secret.as_bytes();
    let deck = deck("authz");
    for (method, path, body, scope) in routes(&deck) {
        let call = |token: Option<String>| {
            let (method, path, body) = (method.clone(), path.clone(), body.clone());
            let stack = &stack;
            async move { stack.call(method, &path, token.as_deref(), body).await }
        };
        let code = |r: &(u16, Value)| (r.0, r.1["error"]["code"].as_str().unwrap_or_default().to_string());
        let unauthorized = (401, "unauthorized".to_string());
        let forbidden = (403, "forbidden".to_string());
        let what = format!("{method} {path}");

        // The right token is accepted (whatever the route then answers, it is not 401/403).
        let good = forge(secret, Algorithm::HS256, "u1", scope, &[&deck], now() + 600);
        let r = call(Some(good)).await?;
        assert!(r.0 != 401 && r.0 != 403 && r.0 < 500, "{what} with the right token: {r:?}");

        // No token, garbage, another secret, another algorithm, expired beyond the skew.
        assert_eq!(code(&call(None).await?), unauthorized, "{what} without a token");
        assert_eq!(code(&call(Some("a.b.c".into())).await?), unauthorized, "{what} with garbage");
        let other_key = forge(b"not the secret", Algorithm::HS256, "u1", scope, &[&deck], now() + 600);
        assert_eq!(code(&call(Some(other_key)).await?), unauthorized, "{what} signed with another key");
        let hs512 = forge(secret, Algorithm::HS512, "u1", scope, &[&deck], now() + 600);
        assert_eq!(code(&call(Some(hs512)).await?), unauthorized, "{what} signed with HS512");
        let expired = forge(secret, Algorithm::HS256, "u1", scope, &[&deck], now() - 120);
        assert_eq!(code(&call(Some(expired)).await?), unauthorized, "{what} with an expired token");
        // A tampered payload: the scope swapped for "references" under the original signature.
        let mine = forge(secret, Algorithm::HS256, "u1", "download", &[&deck], now() + 600);
        let mut parts: Vec<String> = mine.split('.').map(str::to_owned).collect();
        let forged =
            json!({"sub": "u1", "scope": "references upload maintain download", "decks": [&deck], "exp": now() + 600});
        parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, forged.to_string());
        assert_eq!(code(&call(Some(parts.join("."))).await?), unauthorized, "{what} with a tampered payload");

        // Valid tokens without the route's scope.
        for wrong in ["upload", "download", "references", "maintain"].into_iter().filter(|s| *s != scope) {
            // GET /v1/media/{hash} is open to upload and download alike.
            if path.starts_with("/v1/media/") && wrong == "upload" {
                continue;
            }
            let t = forge(secret, Algorithm::HS256, "u1", wrong, &[&deck], now() + 600);
            assert_eq!(code(&call(Some(t)).await?), forbidden, "{what} with scope {wrong}");
        }
        // Maintainers act only on their own decks.
        if scope == "maintain" {
            let t = forge(secret, Algorithm::HS256, "u1", "maintain", &["someone-else"], now() + 600);
            assert_eq!(code(&call(Some(t)).await?), forbidden, "{what} on another's deck");
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_route_applies_the_same_filename_rules() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let deck = deck("names");
    let maintainer = stack.maintainer(&[&deck]);
    let hash = sha256_hex(&unique_bytes(32));
    let hostile = [
        "../etc/passwd.png".to_string(),
        "a\\b.png".to_string(),
        "a\0.png".to_string(),
        "a\n.png".to_string(),
        format!("{}.png", "a".repeat(117)),
        "a[1].png".into(),
        "x^2.png".into(),
        "a\u{a0}b.png".into(),
        "con.png".into(),
        "a.png.".into(),
        "a.png ".into(),
        "..".into(),
    ];
    for name in &hostile {
        // Uploads: that file is refused, with the reason.
        let (status, body) = stack
            .post(
                "/v1/uploads",
                &stack.token("upload"),
                json!({"deck": deck, "files": [{"hash": hash, "size": 10, "filename": name}]}),
            )
            .await?;
        assert_eq!((status, body["files"][0]["reason"].as_str()), (200, Some("bad_filename")), "{name:?}: {body}");
        // References: the whole request is refused, naming the field.
        let (status, body) = stack
            .post(
                "/v1/references",
                &stack.token("references"),
                json!({"deck": deck, "notes": [{"note_id": "n1", "media": [{"filename": name, "hash": hash}]}]}),
            )
            .await?;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{name:?}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("filename"), "{body}");
        // Downloads: no deck can hold such a name; it is listed as unknown, as it was asked.
        let (status, body) =
            stack.post("/v1/downloads", &stack.token("download"), json!({"deck": deck, "filenames": [name]})).await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["unavailable"], json!([{"filename": name, "reason": "unknown"}]), "{name:?}");
        // Removing it: 400 before anything is looked up. (A `..` segment never reaches us: URL
        // parsers resolve it, encoded or not.)
        if name == ".." {
            continue;
        }
        let path = format!("/v1/decks/{deck}/media/{}", urlencode(name));
        let (status, body) = stack.call(Method::DELETE, &path, Some(&maintainer), None).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{name:?}: {body}");
    }
    // Nothing of that reached the deck.
    let (_, page) = stack.call(Method::GET, &format!("/v1/decks/{deck}/media"), Some(&maintainer), None).await?;
    assert_eq!(page["files"], json!([]));

    // One name, two spellings: referenced as NFD, found as NFC and NFD on every route.
    let nfc = "caf\u{e9} r\u{e9}sum\u{e9}.png".to_string();
    let nfd: String = nfc.nfd().collect();
    assert_ne!(nfc, nfd);
    let (status, body) = stack
        .post(
            "/v1/references",
            &stack.token("references"),
            json!({"deck": deck, "notes": [{"note_id": "n1", "media": [{"filename": nfd, "hash": hash}]}]}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (_, body) =
        stack.post("/v1/downloads", &stack.token("download"), json!({"deck": deck, "filenames": [nfc, nfd]})).await?;
    // Referenced but never uploaded: "missing", under each spelling as asked.
    assert_eq!(
        body["unavailable"],
        json!([{"filename": nfc, "reason": "missing"}, {"filename": nfd, "reason": "missing"}])
    );
    let (_, page) = stack.call(Method::GET, &format!("/v1/decks/{deck}/media"), Some(&maintainer), None).await?;
    assert_eq!(page["files"][0]["filename"], json!(nfc), "stored in NFC");
    let (_, page) = stack
        .call(
            Method::GET,
            &format!("/v1/decks/{deck}/media?q={}", urlencode("CAF\u{c9}".nfd().collect::<String>().as_str())),
            Some(&maintainer),
            None,
        )
        .await?;
    assert_eq!(page["files"].as_array().map(Vec::len), Some(1), "an NFD search finds the NFC name: {page}");
    let (status, body) = stack
        .call(Method::DELETE, &format!("/v1/decks/{deck}/media/{}", urlencode(&nfd)), Some(&maintainer), None)
        .await?;
    assert_eq!((status, body), (200, json!({"removed": 1})));
    Ok(())
}

/// Percent-encode everything but unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn oversized_bodies_and_batches_are_refused_whole() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let deck = deck("caps");
    let code = |r: (u16, Value)| (r.0, r.1["error"]["code"].as_str().unwrap_or_default().to_string());
    // Over 512 KiB of JSON: refused before it is parsed, on every route that takes a body.
    let padding = "a".repeat(600 * 1024);
    for (path, scope) in [("/v1/uploads", "upload"), ("/v1/downloads", "download"), ("/v1/references", "references")] {
        let body = json!({"deck": deck, "padding": padding});
        let r = stack.post(path, &stack.token(scope), body).await?;
        assert_eq!(code(r), (413, "payload_too_large".into()), "{path}");
    }
    // Batches one past their cap.
    let files: Vec<Value> =
        (0..501).map(|i| json!({"hash": format!("{i:064x}"), "size": 1, "filename": format!("{i}.png")})).collect();
    let r = stack.post("/v1/uploads", &stack.token("upload"), json!({"deck": deck, "files": files})).await?;
    assert_eq!(code(r), (413, "too_many_items".into()));
    let names: Vec<String> = (0..1001).map(|i| format!("{i}.png")).collect();
    let r = stack.post("/v1/downloads", &stack.token("download"), json!({"deck": deck, "filenames": names})).await?;
    assert_eq!(code(r), (413, "too_many_items".into()));
    let notes: Vec<Value> = (0..101).map(|i| json!({"note_id": format!("n{i}"), "media": []})).collect();
    let r = stack.post("/v1/references", &stack.token("references"), json!({"deck": deck, "notes": notes})).await?;
    assert_eq!(code(r), (413, "too_many_items".into()));
    Ok(())
}

/// A user revoked with `{"mode": "revoke"}` (what `make revoke` sends the sweep-orphans
/// function) is refused on every route by the running gateway within its refresh period (5 s
/// locally, a minute deployed); a revocation by time refuses only tokens issued before it, so
/// signing in again lets the user back; `unrevoke` lets every token back.
#[tokio::test]
async fn a_revoked_user_is_refused_within_the_refresh_period() -> anyhow::Result<()> {
    use shared::lifecycle::{run, SweepCommand};
    let stack = Stack::connect().await?;
    let (app, blobs) = app_with_objects().await?;
    let command = |v: Value| {
        let (app, blobs) = (&app, &blobs);
        async move {
            let command = SweepCommand::from_event(v)?;
            anyhow::Ok(run(&app.lifecycle(&**blobs), &command, time::OffsetDateTime::now_utc()).await?)
        }
    };
    let sub = format!("revoked-{}", &sha256_hex(&unique_bytes(8))[..12]);
    let token = |scope: &str| shared::auth::mint(stack.secret.as_bytes(), &sub, scope, &[], 3600);
    // A hash no test uploads: 404 for a caller let in.
    let unknown = sha256_hex(&unique_bytes(32));
    let status_of = |token: String| {
        let (stack, unknown) = (&stack, &unknown);
        async move {
            let r = stack.call(Method::GET, &format!("/v1/media/{unknown}"), Some(&token), None).await?;
            anyhow::Ok((r.0, r.1["error"]["message"].as_str().unwrap_or_default().to_string()))
        }
    };
    // Waits until `token` gets `want`, at most the production bound (60 s) and a little.
    let until = |token: String, want: u16| async move {
        let started = std::time::Instant::now();
        loop {
            let (status, message) = status_of(token.clone()).await?;
            if status == want {
                return anyhow::Ok((started.elapsed(), message));
            }
            anyhow::ensure!(started.elapsed().as_secs() < 65, "still {status} {message} after 65 s");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    };
    let before = token("download");
    // An unknown hash: 404 once the caller is let in, 401 if not.
    assert_eq!(status_of(before.clone()).await?.0, 404, "not revoked yet");

    command(json!({"mode": "revoke", "sub": sub})).await?;
    let (took, message) = until(before.clone(), 401).await?;
    assert!(message.contains("revoked"), "{message}");
    let refresh = std::env::var("REVOCATION_REFRESH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    assert!(took.as_secs() <= refresh + 3, "honoured after {took:?}, the refresh is {refresh} s");
    assert_eq!(status_of(token("download")).await?.0, 401, "a new token too: the user is revoked outright");
    let listed = command(json!({"mode": "revocations"})).await?;
    assert_eq!(listed[sub.as_str()], json!("all"), "{listed}");

    // Only tokens issued before a time: a token minted after it gets in again.
    let cutoff = now() as u64 + 1;
    command(json!({"mode": "revoke", "sub": sub, "issued_before": cutoff})).await?;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let after = token("download");
    until(after.clone(), 404).await?;
    assert_eq!(status_of(before.clone()).await?.0, 401, "a token from before the cutoff stays refused");

    command(json!({"mode": "unrevoke", "sub": sub})).await?;
    until(before, 404).await?;
    Ok(())
}

/// A burst past a user's rate is answered 429 `rate_limited` with `Retry-After`, on another
/// instance too (the bucket is in DynamoDB, not in the instance), and served again once
/// `Retry-After` has passed. Two instances of the API with production-like limits of their own,
/// over the stack's DynamoDB.
#[tokio::test]
async fn a_burst_past_the_rate_is_answered_429_then_served_after_retry_after() -> anyhow::Result<()> {
    use shared::access::{Gate, Rate, RateLimits};
    use shared::api::{handle, Route};
    let stack = Stack::connect().await?;
    let instance = || async {
        let mut app = shared::App::from_env().await?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let access = std::sync::Arc::new(shared::store::dynamo::DynamoAccess::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            &app.config.quotas_table,
        ));
        let limits = RateLimits { downloads: Rate { per_minute: 60, burst: 3 }, ..RateLimits::default() };
        app.gate = Gate::new(access.clone(), access, limits, 60);
        anyhow::Ok(app)
    };
    let (a, b) = (instance().await?, instance().await?);
    let sub = format!("burst-{}", &sha256_hex(&unique_bytes(8))[..12]);
    let token = shared::auth::mint(stack.secret.as_bytes(), &sub, "download", &[], 3600);
    async fn get(app: &shared::App, token: &str) -> http::Response<lambda_http::Body> {
        // A hash no test uploads: 404 for a caller let in.
        let request = http::Request::builder()
            .uri(format!("/v1/media/{}", "1".repeat(64)))
            .header("authorization", format!("Bearer {token}"))
            .body(lambda_http::Body::Empty)
            .expect("a request");
        handle(app, request, Route::ALL).await
    }
    for i in 0..3 {
        let app = if i == 1 { &b } else { &a };
        // An unknown hash: 404 is the answer of a request let in.
        assert_eq!(get(app, &token).await.status(), 404, "request {i} of a burst of three");
    }
    for app in [&a, &b] {
        let refused = get(app, &token).await;
        assert_eq!(refused.status(), 429);
        let body: Value = serde_json::from_slice(refused.body().as_ref())?;
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        let wait: u64 = refused.headers()["retry-after"].to_str()?.parse()?;
        assert!((1..=2).contains(&wait), "one token a second: Retry-After {wait}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(get(&b, &token).await.status(), 404, "served once Retry-After has passed");
    // Another user's bucket is their own.
    let other = shared::auth::mint(stack.secret.as_bytes(), &format!("{sub}-2"), "download", &[], 3600);
    assert_eq!(get(&a, &other).await.status(), 404);
    Ok(())
}

/// Cursors are decoded before they reach DynamoDB: a forged one (empty, over-long, not base64,
/// not UTF-8, not a filename) is a 400 naming the cursor, on both routes that take one; the
/// stack's DynamoDB is the judge of what would otherwise have reached it.
#[tokio::test]
async fn forged_cursors_are_refused_with_400() -> anyhow::Result<()> {
    use base64::Engine;
    let stack = Stack::connect().await?;
    let deck = deck("cursor");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let forged = ["".to_string(), b64(&[b'a'; 3000]), "!!!".into(), b64(&[0xff, 0xfe]), b64(b"a/b"), b64(b"..")];
    for cursor in &forged {
        let r = stack.post("/v1/downloads", &stack.token("download"), json!({"deck": deck, "cursor": cursor})).await?;
        assert_eq!((r.0, r.1["error"]["code"].as_str()), (400, Some("bad_request")), "downloads, {cursor:?}: {r:?}");
        assert!(r.1["error"]["message"].as_str().unwrap_or_default().contains("cursor"), "{r:?}");
        let path = format!("/v1/decks/{deck}/media?cursor={}", urlencode(cursor));
        let r = stack.call(Method::GET, &path, Some(&stack.maintainer(&[&deck])), None).await?;
        assert_eq!((r.0, r.1["error"]["code"].as_str()), (400, Some("bad_request")), "listing, {cursor:?}: {r:?}");
    }
    // A cursor the API gave is taken.
    let r =
        stack.post("/v1/downloads", &stack.token("download"), json!({"deck": deck, "cursor": b64(b"a.png")})).await?;
    assert_eq!(r.0, 200, "{r:?}");
    Ok(())
}

/// A pending record's declared size and uploader belong to whoever asked first while their URL
/// is valid: another user asking for the same hash with another size gets a URL of their own and
/// changes nothing, so the first user's upload still succeeds.
#[tokio::test]
async fn another_user_cannot_change_a_pending_upload() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let deck = deck("pending");
    let bytes = integration_tests::unique_png();
    let hash = sha256_hex(&bytes);
    let ask = |sub: &str, size: usize| {
        let token = shared::auth::mint(stack.secret.as_bytes(), sub, "upload", &[], 3600);
        let body = json!({"deck": deck, "files": [{"hash": hash, "size": size, "filename": "p.png"}]});
        let stack = &stack;
        async move { stack.post("/v1/uploads", &token, body).await }
    };
    let (status, first) = ask("first-uploader", bytes.len()).await?;
    assert_eq!((status, first["files"][0]["status"].as_str()), (200, Some("upload")), "{first}");
    let (status, second) = ask("second-uploader", bytes.len() + 1000).await?;
    assert_eq!((status, second["files"][0]["status"].as_str()), (200, Some("upload")), "{second}");
    let record = stack.record(&hash).await?.expect("a pending record");
    assert_eq!(record["size"].as_n().ok().map(String::as_str), Some(bytes.len().to_string().as_str()));
    assert_eq!(record["uploader"].as_s().ok().map(String::as_str), Some("first-uploader"));
    // The second user's URL is for their size, and storage checks the hash: no bytes of that
    // size can be stored under it.
    let mut padded = bytes.clone();
    padded.resize(bytes.len() + 1000, 0);
    assert_ne!(stack.put_upload(&second["files"][0], padded).await?, 200);
    assert_eq!(stack.put_upload(&first["files"][0], bytes.clone()).await?, 200);
    let done = stack.wait_processed(&hash).await?;
    assert_eq!((done["status"].as_str(), done["size"].as_u64()), (Some("ready"), Some(bytes.len() as u64)), "{done}");
    Ok(())
}

/// Paths with an empty segment are no route: `//admin` would serve the page with a base that
/// sends its API calls (and the maintainer's token) to another host.
#[tokio::test]
async fn paths_with_empty_segments_are_not_found() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    for path in ["//admin?deck=d1", "///admin?deck=d1", "/admin/?deck=d1", "//v1/downloads", "/v1//downloads"] {
        let r = stack.http.get(format!("{}{path}", stack.api)).send().await?;
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    assert_eq!(stack.http.get(format!("{}/admin?deck=d1", stack.api)).send().await?.status().as_u16(), 200);
    Ok(())
}
