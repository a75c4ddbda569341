//! Attacks on the API, end to end through the local gateway: forged, expired and wrongly scoped
//! tokens on every route, and hostile filenames, which every route must treat alike.

use integration_tests::{deck, sha256_hex, unique_bytes, Stack};
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
