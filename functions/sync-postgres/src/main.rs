//! On the DynamoDB streams of the media and deck-index tables: keep AnkiCollab's Postgres equal
//! to DynamoDB, reporting failed records so that Lambda retries from them. Invoked directly with
//! `{"mode": "migrate"}` or `{"mode": "reconcile", "fix": true}` it migrates the schema, or
//! compares (and repairs, or backfills) the whole mirror. Glue only: the logic is `shared::sync`.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::store::postgres::PgMirror;
use shared::sync::StreamTables;
use shared::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::without_tokens().await?;
    // The pool lives as long as the instance: connections are reused across invocations.
    let mirror = PgMirror::from_env().await?;
    let tables =
        StreamTables { media: app.config.media_table.clone(), deck_files: app.config.deck_files_table.clone() };
    let (media, decks, mirror, tables) = (app.media.as_ref(), app.decks.as_ref(), &mirror, &tables);
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, Error>(shared::sync::handle(media, decks, mirror, tables, event.payload).await?)
    }))
    .await
}
