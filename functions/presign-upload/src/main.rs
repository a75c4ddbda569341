//! POST /v1/uploads. Glue only: the logic is `shared::uploads`.

use lambda_http::{run, service_fn, Error, Request};
use shared::api::{handle, Route};
use shared::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    let app = &app;
    run(service_fn(move |req: Request| async move { Ok::<_, Error>(handle(app, req, &[Route::Uploads]).await) })).await
}
