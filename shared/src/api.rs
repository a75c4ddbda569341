//! The HTTP layer shared by the Lambda functions and the local gateway: routing, auth, JSON in
//! and out, and the one place where errors become responses.

use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;

use crate::access::RouteClass;
use crate::app::App;
use crate::auth::Principal;
use crate::downloads::{media_status, presign_downloads};
use crate::error::ApiError;
use crate::maintainer_page::{self, Served};
use crate::maintainers::{list_deck_media, remove_deck_file};
use crate::policy::check_deck;
use crate::references::apply_references;
use crate::uploads::presign_uploads;

/// The API's routes. Each Lambda function serves some of them; the local gateway serves all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Uploads,
    Downloads,
    MediaStatus,
    References,
    DeckMedia,
    DeckMediaRemove,
    /// `GET /admin?deck=…`: the maintainer page (HTML; no token needed to fetch it).
    AdminPage,
    /// `GET /admin/{asset}`: its scripts and style sheet.
    AdminAsset,
}

impl Route {
    /// The rate limit a route counts against (`access`); `None` for the page, which needs no token.
    pub fn class(self) -> Option<RouteClass> {
        match self {
            Route::Uploads => Some(RouteClass::Uploads),
            Route::Downloads | Route::MediaStatus => Some(RouteClass::Downloads),
            Route::References => Some(RouteClass::References),
            Route::DeckMedia | Route::DeckMediaRemove => Some(RouteClass::Maintainer),
            Route::AdminPage | Route::AdminAsset => None,
        }
    }

    pub const ALL: &'static [Route] = &[
        Route::Uploads,
        Route::Downloads,
        Route::MediaStatus,
        Route::References,
        Route::DeckMedia,
        Route::DeckMediaRemove,
        Route::AdminPage,
        Route::AdminAsset,
    ];
}

fn decode_segment(s: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad_request("path: not UTF-8 once decoded"))
}

/// Match a path to a route and its (decoded) path parameters. A path has no empty segment:
/// `//admin` is not the page (its relative URLs would resolve to another host), nor is `/admin/`.
pub fn route(method: &Method, path: &str) -> Result<(Route, Vec<String>), ApiError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or_default().split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(ApiError::not_found("no such route"));
    }
    let (route, params, allowed) = match segments[..] {
        ["v1", "uploads"] => (Route::Uploads, vec![], Method::POST),
        ["v1", "downloads"] => (Route::Downloads, vec![], Method::POST),
        ["v1", "references"] => (Route::References, vec![], Method::POST),
        ["v1", "media", hash] => (Route::MediaStatus, vec![decode_segment(hash)?], Method::GET),
        ["v1", "decks", deck, "media"] => (Route::DeckMedia, vec![decode_segment(deck)?], Method::GET),
        ["v1", "decks", deck, "media", filename] => {
            (Route::DeckMediaRemove, vec![decode_segment(deck)?, decode_segment(filename)?], Method::DELETE)
        }
        ["admin"] => (Route::AdminPage, vec![], Method::GET),
        ["admin", asset] => (Route::AdminAsset, vec![decode_segment(asset)?], Method::GET),
        _ => return Err(ApiError::not_found("no such route")),
    };
    if *method != allowed {
        let allow = if allowed == Method::GET {
            "GET"
        } else if allowed == Method::DELETE {
            "DELETE"
        } else {
            "POST"
        };
        return Err(ApiError::method_not_allowed(allow));
    }
    Ok((route, params))
}

/// A query string parameter, decoded (`+` is a space).
fn query_param(req: &Request, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
    })
}

fn parse_json<T: DeserializeOwned>(app: &App, body: &[u8]) -> Result<T, ApiError> {
    if body.len() > app.config.limits.max_body_bytes {
        return Err(ApiError::payload_too_large(format!(
            "request body is larger than {} bytes",
            app.config.limits.max_body_bytes
        )));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("body: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })
}

/// Answers at least this large are sent gzipped to a client that accepts it: below, the frame
/// (18 bytes) and the work are not worth it.
pub const GZIP_FROM_BYTES: usize = 1024;
/// The fastest level (zlib-rs): the answers are mostly repeated text (hosts, parameter names, a
/// shared policy), which it finds too; level 3 saved a third more bytes for 14 % more handler
/// CPU (BENCHMARKS.md, "Compressed answers").
const GZIP_LEVEL: u32 = 1;

/// Whether `Accept-Encoding` allows gzip: named with a q above 0, or not named and `*` allowed
/// (RFC 9110, 12.5.3).
pub fn accepts_gzip(req: &Request) -> bool {
    let (mut gzip, mut any) = (None, None);
    let codings = req.headers().get_all(http::header::ACCEPT_ENCODING).into_iter().filter_map(|v| v.to_str().ok());
    for coding in codings.flat_map(|v| v.split(',')) {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())
            .unwrap_or(0.0);
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(q > 0.0);
        } else if name == "*" {
            any = Some(q > 0.0);
        }
    }
    gzip.or(any).unwrap_or(false)
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::new(GZIP_LEVEL));
    encoder.write_all(body)?;
    encoder.finish()
}

fn json_response<T: Serialize>(status: StatusCode, value: &T, gzip_ok: bool) -> Response<Body> {
    let body = match serde_json::to_string(value) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "response did not serialise");
            return error_response(&ApiError::internal());
        }
    };
    if !gzip_ok || body.len() < GZIP_FROM_BYTES {
        return respond(status, body, None);
    }
    match gzip(body.as_bytes()) {
        Ok(compressed) => {
            let mut response = respond(status, String::new(), None);
            let headers = response.headers_mut();
            headers.insert(http::header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
            headers.insert(http::header::VARY, http::HeaderValue::from_static("accept-encoding"));
            *response.body_mut() = Body::Binary(compressed);
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "gzip failed; answering uncompressed");
            respond(status, body, None)
        }
    }
}

fn respond(status: StatusCode, body: String, retry_after: Option<u64>) -> Response<Body> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store");
    if let Some(secs) = retry_after {
        builder = builder.header("retry-after", secs.to_string());
    }
    builder.body(Body::Text(body)).unwrap_or_else(|_| Response::new(Body::Empty))
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = respond(status, e.body(), e.retry_after);
    if let Some(allow) = e.allow {
        response.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    }
    response
}

/// A static answer of the maintainer page, with its validator: a matching `If-None-Match` gets
/// a 304 without the body. Browsers revalidate every time (`no-cache`), so a deployment is seen
/// at once and an unchanged file costs a few bytes.
fn served_response(req: &Request, served: Served) -> Response<Body> {
    let fresh = req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == served.etag));
    let mut builder = Response::builder()
        .status(if fresh { StatusCode::NOT_MODIFIED } else { StatusCode::OK })
        .header("content-type", served.content_type)
        .header("cache-control", "no-cache")
        .header("etag", served.etag.as_str())
        .header("x-content-type-options", "nosniff");
    for (name, value) in &served.headers {
        builder = builder.header(*name, value.as_str());
    }
    let body = if fresh { Body::Empty } else { Body::Text(served.body) };
    builder.body(body).unwrap_or_else(|_| Response::new(Body::Empty))
}

/// The page is public (it holds no data); what it shows comes from the API, with a token.
fn admin(app: &App, req: &Request, route: Route, params: &[String]) -> Result<Response<Body>, ApiError> {
    if route == Route::AdminAsset {
        let served = params.first().and_then(|name| maintainer_page::asset(name));
        return served.map(|s| served_response(req, s)).ok_or_else(|| ApiError::not_found("no such file"));
    }
    let deck = query_param(req, "deck").ok_or_else(|| ApiError::bad_request("deck: required (/admin?deck=<deck>)"))?;
    check_deck(&deck)?;
    Ok(served_response(req, maintainer_page::page(&app.config.embed_origins, app.url_signer().origin())))
}

fn authenticate(app: &App, req: &Request) -> Result<Principal, ApiError> {
    let verifier = app.tokens.as_ref().ok_or_else(|| {
        tracing::error!("JWT_SECRET is not configured");
        ApiError::internal()
    })?;
    let header = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    verifier.verify(header)
}

/// Serve one request. `allowed` limits the routes this entry point answers (per function).
pub async fn handle(app: &App, req: Request, allowed: &[Route]) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = dispatch(app, &req, allowed).await;
    let response = result.unwrap_or_else(|e| error_response(&e));
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

async fn dispatch(app: &App, req: &Request, allowed: &[Route]) -> Result<Response<Body>, ApiError> {
    let (route, params) = route(req.method(), req.uri().path())?;
    if !allowed.contains(&route) {
        return Err(ApiError::not_found("no such route"));
    }
    if matches!(route, Route::AdminPage | Route::AdminAsset) {
        return admin(app, req, route, &params);
    }
    let who = authenticate(app, req)?;
    let now = OffsetDateTime::now_utc();
    if let Some(class) = route.class() {
        app.gate.admit(&who, class, now).await?;
    }
    let body = req.body().as_ref();
    let param = |i: usize| params.get(i).map(String::as_str).unwrap_or_default();
    let gzip_ok = accepts_gzip(req);
    Ok(match route {
        Route::Uploads => json_response(
            StatusCode::OK,
            &presign_uploads(&app.uploads(), &who, parse_json(app, body)?, now).await?,
            gzip_ok,
        ),
        Route::Downloads => json_response(
            StatusCode::OK,
            &presign_downloads(&app.downloads(), &who, parse_json(app, body)?, now).await?,
            gzip_ok,
        ),
        Route::MediaStatus => {
            json_response(StatusCode::OK, &media_status(app.media.as_ref(), &who, param(0)).await?, gzip_ok)
        }
        Route::References => json_response(
            StatusCode::OK,
            &apply_references(app.refs.as_ref(), app.media.as_ref(), &who, parse_json(app, body)?, now).await?,
            gzip_ok,
        ),
        Route::DeckMedia => {
            let (q, cursor) = (query_param(req, "q"), query_param(req, "cursor"));
            let page =
                list_deck_media(&app.maintainers(), &who, param(0), q.as_deref(), cursor.as_deref(), now).await?;
            json_response(StatusCode::OK, &page, gzip_ok)
        }
        Route::DeckMediaRemove => json_response(
            StatusCode::OK,
            &remove_deck_file(&app.maintainers(), &who, param(0), param(1), now).await?,
            gzip_ok,
        ),
        // Served above, without a token.
        Route::AdminPage | Route::AdminAsset => return Err(ApiError::not_found("no such route")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::POST, "/v1/uploads").unwrap().0, Route::Uploads);
        assert_eq!(route(&Method::GET, "/v1/media/abc").unwrap(), (Route::MediaStatus, vec!["abc".to_string()]));
        assert_eq!(
            route(&Method::DELETE, "/v1/decks/d1/media/caf%C3%A9%20x.png").unwrap(),
            (Route::DeckMediaRemove, vec!["d1".to_string(), "café x.png".to_string()])
        );
        assert_eq!(route(&Method::GET, "/v1/uploads").unwrap_err().status, 405);
        let e = route(&Method::POST, "/v1/decks/d1/media/a.png").unwrap_err();
        assert_eq!(error_response(&e).headers()["allow"], "DELETE", "a 405 names the allowed method");
        assert_eq!(route(&Method::GET, "/v1/media/a/b").unwrap_err().status, 404);
        assert_eq!(route(&Method::GET, "/nope").unwrap_err().status, 404);
        assert_eq!(route(&Method::GET, "/admin").unwrap().0, Route::AdminPage);
        assert_eq!(route(&Method::GET, "/admin/app.js").unwrap(), (Route::AdminAsset, vec!["app.js".to_string()]));
        assert_eq!(route(&Method::POST, "/admin").unwrap_err().status, 405);
        assert_eq!(route(&Method::GET, "/admin/a/b.js").unwrap_err().status, 404);
        for empty in ["//admin", "/admin/", "//v1/uploads", "/v1//uploads", "/v1/uploads/", "", "/"] {
            assert_eq!(route(&Method::GET, empty).unwrap_err().status, 404, "{empty:?}");
        }
    }

    #[test]
    fn accept_encoding_is_read_as_http_says() {
        let accepts = |value: Option<&str>| {
            let mut b = http::Request::builder();
            if let Some(v) = value {
                b = b.header("accept-encoding", v);
            }
            accepts_gzip(&b.body(Body::Empty).unwrap())
        };
        for yes in ["gzip", "gzip, deflate", "br;q=1.0, gzip;q=0.8", "*", "deflate, *;q=0.5", "GZIP", "x-gzip"] {
            assert!(accepts(Some(yes)), "{yes}");
        }
        for no in ["", "identity", "br", "gzip;q=0", "gzip;q=0, *", "*;q=0", "gzip;q=x"] {
            assert!(!accepts(Some(no)), "{no}");
        }
        assert!(!accepts(None), "no header: identity only");
    }

    /// A large answer is gzipped for a client that accepts it and reads back as the same JSON;
    /// a small one, an error, or a client that does not accept gzip get plain JSON.
    #[tokio::test]
    async fn large_answers_are_gzipped_for_clients_that_accept_it() {
        use std::io::Read;
        let app = App::in_memory("k");
        let token = crate::auth::mint(b"k", "u", "upload download", &[], 600);
        let files: Vec<serde_json::Value> = (0..50)
            .map(|i| serde_json::json!({"hash": format!("{i:064x}"), "size": 10, "filename": format!("f{i}.png")}))
            .collect();
        let body = serde_json::json!({"deck": "d1", "files": files}).to_string();
        let post = |encoding: Option<&str>, body: String| {
            let mut b = http::Request::builder()
                .method(Method::POST)
                .uri("/v1/uploads")
                .header("authorization", format!("Bearer {token}"));
            if let Some(e) = encoding {
                b = b.header("accept-encoding", e);
            }
            b.body(Body::Text(body)).unwrap()
        };
        let plain = handle(&app, post(None, body.clone()), Route::ALL).await;
        let zipped = handle(&app, post(Some("gzip, deflate"), body.clone()), Route::ALL).await;
        assert_eq!((plain.status().as_u16(), zipped.status().as_u16()), (200, 200));
        assert!(plain.headers().get("content-encoding").is_none());
        assert_eq!(zipped.headers()["content-encoding"], "gzip");
        assert_eq!(zipped.headers()["vary"], "accept-encoding");
        assert_eq!(zipped.headers()["content-type"], "application/json");
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(zipped.body().as_ref()).read_to_string(&mut unzipped).unwrap();
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_slice(plain.body().as_ref()).unwrap(), serde_json::from_str(&unzipped).unwrap());
        assert_eq!(a["files"].as_array().unwrap().len(), 50);
        // The same answer but for the signatures' time: compare what is not signed.
        let names = |v: &serde_json::Value| {
            v["files"].as_array().unwrap().iter().map(|f| f["status"].clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
        assert!(zipped.body().len() * 3 < plain.body().len(), "{} of {}", zipped.body().len(), plain.body().len());

        let small = http::Request::builder()
            .method(Method::POST)
            .uri("/v1/downloads")
            .header("authorization", format!("Bearer {token}"))
            .header("accept-encoding", "gzip")
            .body(Body::Text(r#"{"deck": "d1", "filenames": ["a.png"]}"#.into()))
            .unwrap();
        let small = handle(&app, small, Route::ALL).await;
        assert_eq!(small.status(), 200);
        assert!(small.headers().get("content-encoding").is_none(), "{small:?}");
        let error = handle(&app, post(Some("gzip"), "not json".into()), Route::ALL).await;
        assert_eq!(error.status(), 400);
        assert!(error.headers().get("content-encoding").is_none());
    }

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().method(Method::GET).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::Empty).unwrap()
    }

    /// The maintainer page needs no token to fetch (it holds no data), carries its policy
    /// headers, revalidates cheaply, and is refused for a missing or malformed deck.
    #[tokio::test]
    async fn the_maintainer_page_is_served_with_its_policy() {
        let app = App::in_memory("k");
        let r = handle(&app, get("https://api.example/admin?deck=d1", &[]), Route::ALL).await;
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-cache");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; script-src 'self';"), "{csp}");
        assert!(csp.contains("img-src https://media-bucket.s3.us-east-1.amazonaws.com;"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let body = std::str::from_utf8(r.body().as_ref()).unwrap();
        assert!(body.contains(r#"<script type="module" src="admin/app.js"></script>"#));

        let etag = h["etag"].to_str().unwrap().to_string();
        // With the distribution on, previews come from it, and only from it.
        let mut cdn_app = App::in_memory("k");
        let key = include_str!("../testdata/cdn-test-key.pem");
        cdn_app.cdn = Some(crate::cdn::CdnSigner::new("https://d1.cloudfront.net", "K", key).unwrap());
        let r = handle(&cdn_app, get("/admin?deck=d1", &[]), Route::ALL).await;
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("img-src https://d1.cloudfront.net; media-src https://d1.cloudfront.net;"), "{csp}");
        let again = handle(&app, get("/admin?deck=d1", &[("if-none-match", &etag)]), Route::ALL).await;
        assert_eq!(again.status(), 304);
        assert!(again.body().is_empty());

        let js = handle(&app, get("/admin/app.js", &[]), Route::ALL).await;
        assert_eq!(js.status(), 200);
        assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
        assert_eq!(js.headers()["x-content-type-options"], "nosniff");
        let css = handle(&app, get("/admin/style.css", &[]), Route::ALL).await;
        assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

        for (uri, status) in [
            ("/admin", 400),
            ("/admin?deck=", 400),
            ("/admin?deck=a%2Fb", 400),
            ("/admin?deck=%3Cscript%3E", 400),
            ("/admin/?deck=d1", 404),
            ("//admin?deck=d1", 404),
            ("///admin?deck=d1", 404),
            ("/admin/index.html", 404),
            ("/admin/..%2FCargo.toml", 404),
        ] {
            assert_eq!(handle(&app, get(uri, &[]), Route::ALL).await.status(), status, "{uri}");
        }
        // A function that does not serve the page does not answer it.
        assert_eq!(handle(&app, get("/admin?deck=d1", &[]), &[Route::Uploads]).await.status(), 404);
    }

    /// The sample events in `events/` (as API Gateway delivers them), parsed as the Lambda
    /// runtime parses them and handed to the handler over in-memory stores, in the order a
    /// client would send them; `tests/e2e/lambda_events.rs` does the same against the local stack.
    #[tokio::test]
    async fn the_sample_events_reach_their_handlers() {
        let app = App::in_memory("k");
        let token = |scope: &str, decks: &[&str]| {
            let decks: Vec<String> = decks.iter().map(|d| d.to_string()).collect();
            crate::auth::mint(b"k", "events-user", scope, &decks, 3600)
        };
        let event = |text: &str, token: &str| {
            lambda_http::request::from_str(&text.replace("REPLACE_WITH_TOKEN (scripts/token)", token))
                .expect("a sample event API Gateway could send")
        };
        let json = |r: &http::Response<Body>| -> serde_json::Value {
            serde_json::from_slice(r.body().as_ref()).expect("a JSON answer")
        };
        let user = token("upload download", &[]);

        let r = handle(&app, event(include_str!("../../events/presign-upload.json"), &user), &[Route::Uploads]).await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        assert_eq!(json(&r)["files"][0]["status"], "upload", "{}", json(&r));

        let references = token("references", &[]);
        let r =
            handle(&app, event(include_str!("../../events/references.json"), &references), &[Route::References]).await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        assert_eq!(json(&r)["added"], 1);

        let downloads = &[Route::Downloads, Route::MediaStatus];
        let r = handle(&app, event(include_str!("../../events/presign-download.json"), &user), downloads).await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        let body = json(&r);
        let mut unavailable: Vec<(&str, &str)> = body["unavailable"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| Some((u["filename"].as_str()?, u["reason"].as_str()?)))
            .collect();
        unavailable.sort();
        // cell.png is referenced but not uploaded yet; no note uses heart.mp3.
        assert_eq!(unavailable, [("cell.png", "pending"), ("heart.mp3", "unknown")], "{body}");

        let r = handle(&app, event(include_str!("../../events/media-status.json"), &user), downloads).await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        assert_eq!(json(&r)["status"], "pending");

        let maintainer = token("maintain", &["d1"]);
        let routes = &[Route::DeckMedia, Route::DeckMediaRemove];
        let r = handle(&app, event(include_str!("../../events/deck-media.json"), &maintainer), routes).await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        assert_eq!(json(&r)["files"][0]["filename"], "cell.png", "{}", json(&r));
        let other = token("maintain", &["d2"]);
        let r = handle(&app, event(include_str!("../../events/deck-media.json"), &other), routes).await;
        assert_eq!(r.status(), 403, "another deck's maintainer");
        let r = handle(&app, event(include_str!("../../events/deck-media-remove.json"), &maintainer), routes).await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        assert_eq!(json(&r)["removed"], 1);

        let page = &[Route::AdminPage, Route::AdminAsset];
        let r = handle(&app, event(include_str!("../../events/admin-page.json"), ""), page).await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    }
}
