//! POST /v1/references (the AnkiCollab backend) and the maintainer API
//! (GET /v1/decks/{deck}/media, DELETE /v1/decks/{deck}/media/{filename}) with its page
//! (GET /admin?deck=…, GET /admin/{asset}). Glue only: the logic is `shared::references`,
//! `shared::maintainers` and `shared::maintainer_page`.

use lambda_http::{run, service_fn, Error, Request};
use shared::api::{handle, Route};
use shared::App;

const ROUTES: &[Route] =
    &[Route::References, Route::DeckMedia, Route::DeckMediaRemove, Route::AdminPage, Route::AdminAsset];

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    let app = &app;
    run(service_fn(move |req: Request| async move { Ok::<_, Error>(handle(app, req, ROUTES).await) })).await
}
