//! Request parsing, end to end: an HTTP request built from the fuzz input goes through
//! `shared::api::handle` (routing, path decoding, token, body size, JSON parsing, validation of
//! decks, hashes, filenames and note ids, the handlers) over in-memory stores.
//!
//! Input layout: byte 0 picks the route (bits 0-2) and the token's scopes (bits 3-6; bit 7 adds
//! the maintained deck `d1`); the rest is the JSON body for POST routes, or the path parameter(s)
//! (split at the first `\n`) and query string (after a `?`) for GET/DELETE routes, or a raw
//! path and body (split at the first `\n`) with any method.
//!
//! Beyond "does not crash": no 5xx (in-memory stores never fail, so any 5xx is a bug), every
//! body is JSON, every error body is `{"error": {"code", "message"}}` with a known code whose
//! status matches.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use shared::api::{handle, Route};
use shared::App;

const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";
/// Characters escaped in a path segment; `%` is left alone so the input can carry its own escapes.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'^')
    .add(b'|');
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

fn status_of(code: &str) -> Option<u16> {
    Some(match code {
        "bad_request" => 400,
        "unauthorized" => 401,
        "forbidden" => 403,
        "not_found" => 404,
        "method_not_allowed" => 405,
        "too_many_items" | "payload_too_large" => 413,
        "rate_limited" | "quota_exceeded" => 429,
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    let scopes: Vec<&str> = ["upload", "download", "maintain", "references"]
        .iter()
        .enumerate()
        .filter(|(i, _)| head >> (3 + i) & 1 == 1)
        .map(|(_, s)| *s)
        .collect();
    let decks = if head & 0x80 != 0 { vec!["d1".to_string()] } else { vec![] };

    let text = String::from_utf8_lossy(rest);
    let (first, second) = text.split_once('\n').unwrap_or((&text, ""));
    let seg = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
    let (method, uri, body): (&str, String, Vec<u8>) = match head & 7 {
        0 | 7 => ("POST", "/v1/uploads".into(), rest.to_vec()),
        1 => ("POST", "/v1/downloads".into(), rest.to_vec()),
        2 => ("POST", "/v1/references".into(), rest.to_vec()),
        3 => ("GET", format!("/v1/media/{}", seg(first)), vec![]),
        4 => {
            let (deck, query) = first.split_once('?').unwrap_or((first, ""));
            ("GET", format!("/v1/decks/{}/media?{}", seg(deck), utf8_percent_encode(query, QUERY)), vec![])
        }
        5 => ("DELETE", format!("/v1/decks/{}/media/{}", seg(first), seg(second)), vec![]),
        _ => {
            let method = ["GET", "POST", "DELETE", "PUT", "PATCH"][rest.first().copied().unwrap_or(0) as usize % 5];
            (method, utf8_percent_encode(first, QUERY).to_string(), second.as_bytes().to_vec())
        }
    };
    let Ok(req) = http::Request::builder()
        .method(method)
        .uri(&uri)
        .header(
            "authorization",
            format!("Bearer {}", shared::auth::mint(SECRET.as_bytes(), "fuzzer", &scopes.join(" "), &decks, 600)),
        )
        .body(lambda_http::Body::Binary(body))
    else {
        return;
    };

    let app = App::in_memory(SECRET);
    let resp = runtime().block_on(handle(&app, req, Route::ALL));
    let status = resp.status().as_u16();
    assert!(status < 500, "{method} {uri} answered {status}: {:?}", resp.body());
    // The maintainer page and its scripts (GET /admin…) are public static files, not JSON.
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if content_type != "application/json" {
        assert!(method == "GET" && matches!(status, 200 | 304), "{method} {uri}: {status} as {content_type:?}");
        assert!(["text/html", "text/javascript", "text/css"].iter().any(|t| content_type.starts_with(t)), "{content_type}");
        return;
    }
    let value: serde_json::Value = serde_json::from_slice(resp.body().as_ref())
        .unwrap_or_else(|e| panic!("{method} {uri}: body is not JSON ({e}): {:?}", resp.body()));
    if status >= 400 {
        let code = value["error"]["code"].as_str().unwrap_or_else(|| panic!("error body without a code: {value}"));
        assert!(value["error"]["message"].is_string(), "error body without a message: {value}");
        assert_eq!(status_of(code), Some(status), "{method} {uri}: code {code} with status {status}");
    }
});
