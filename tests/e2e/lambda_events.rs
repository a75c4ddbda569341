//! The sample events in `events/`, parsed the way the Lambda runtime parses them and handed to
//! the same handler code the functions run, against the local stack.

use integration_tests::{app_with_objects, sha256_hex, unique_png, Stack};
use shared::api::{handle, Route};

fn event(name: &str, token: &str) -> lambda_http::Request {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap().replace("REPLACE_WITH_TOKEN (scripts/token)", token);
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json(resp: &http::Response<lambda_http::Body>) -> serde_json::Value {
    serde_json::from_slice(resp.body().as_ref()).unwrap()
}

#[tokio::test]
async fn http_fixture_events_reach_their_handlers() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let app = shared::App::from_env().await?;
    let token = stack.token("upload download");

    let resp = handle(&app, event("presign-upload.json", &token), &[Route::Uploads]).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    let body = json(&resp);
    assert!(matches!(body["files"][0]["status"].as_str(), Some("upload" | "exists")), "{body}");

    let resp = handle(&app, event("presign-download.json", &token), &[Route::Downloads, Route::MediaStatus]).await;
    assert_eq!(resp.status(), 200);
    let body = json(&resp);
    let names: Vec<&str> =
        body["unavailable"].as_array().unwrap().iter().map(|u| u["filename"].as_str().unwrap()).collect();
    assert!(names.contains(&"heart.mp3"), "{body}");

    let resp = handle(&app, event("media-status.json", &token), &[Route::Downloads, Route::MediaStatus]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(&resp)["status"], "pending");

    let routes = &[Route::References, Route::DeckMedia, Route::DeckMediaRemove];
    let routes_with_page =
        &[Route::References, Route::DeckMedia, Route::DeckMediaRemove, Route::AdminPage, Route::AdminAsset];
    let resp = handle(&app, event("references.json", &stack.token("references")), routes).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    let maintainer = stack.maintainer(&["d1"]);
    let resp = handle(&app, event("deck-media.json", &maintainer), routes).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    let body = json(&resp);
    assert!(body["files"].as_array().unwrap().iter().any(|f| f["filename"] == "cell.png"), "{body}");
    let resp = handle(&app, event("deck-media-remove.json", &maintainer), routes).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    assert_eq!(json(&resp)["removed"], 1);
    // Someone else's deck.
    let resp = handle(&app, event("deck-media.json", &stack.maintainer(&["d2"])), routes).await;
    assert_eq!(resp.status(), 403);

    // The maintainer page, as API Gateway delivers its request (the deck in the query string).
    let resp = handle(&app, event("admin-page.json", ""), routes_with_page).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert!(resp.headers()["content-security-policy"].to_str()?.starts_with("default-src 'none'"));
    assert_eq!(handle(&app, event("admin-page.json", ""), routes).await.status(), 404);

    // A function does not answer another function's route.
    let resp = handle(&app, event("presign-upload.json", &token), &[Route::Downloads, Route::MediaStatus]).await;
    assert_eq!(resp.status(), 404);
    Ok(())
}

#[tokio::test]
async fn s3_fixture_event_processes_an_upload() -> anyhow::Result<()> {
    let stack = Stack::connect().await?;
    let (app, blobs) = app_with_objects().await?;
    let body = unique_png();
    let hash = sha256_hex(&body);
    let items = stack.request_uploads("fixture", &[("fixture.png", &body)]).await?;
    assert_eq!(stack.put_upload(&items[0], body).await?, 200);
    let text = std::fs::read_to_string(format!("{}/../events/process-upload.json", env!("CARGO_MANIFEST_DIR")))?
        .replace("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &hash);
    let event: aws_lambda_events::s3::S3Event = serde_json::from_str(&text)?;
    shared::process::handle_s3_event(&app.processing(&*blobs), &event).await?;
    assert_eq!(stack.wait_processed(&hash).await?["status"], "ready");
    Ok(())
}
