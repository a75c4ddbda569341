//! The storage contracts (`shared::store::contract`) against the real adapters on the local
//! stack: DynamoDB (moto), S3 (LocalStack) and Postgres. The same contracts run against the
//! in-memory store in `shared`'s unit tests, so the two cannot drift apart.

use integration_tests::{pg, Stack};
use shared::store::contract;

/// The App the functions build, from the stack's environment.
async fn app() -> anyhow::Result<shared::App> {
    Stack::connect().await?;
    Ok(shared::App::from_env().await?)
}

#[tokio::test]
async fn dynamodb_media_records_keep_the_contract() -> anyhow::Result<()> {
    let app = app().await?;
    contract::media_repo(app.media.as_ref()).await?;
    Ok(())
}

#[tokio::test]
async fn dynamodb_references_and_deck_index_keep_the_contract() -> anyhow::Result<()> {
    let app = app().await?;
    contract::references(app.refs.as_ref(), app.media.as_ref(), app.decks.as_ref()).await?;
    Ok(())
}

#[tokio::test]
async fn dynamodb_quotas_keep_the_contract() -> anyhow::Result<()> {
    let app = app().await?;
    contract::quotas(app.quotas.as_ref()).await?;
    Ok(())
}

#[tokio::test]
async fn s3_objects_keep_the_contract() -> anyhow::Result<()> {
    let app = app().await?;
    let blobs = shared::app::object_store(&app.config).await;
    contract::blobs(blobs.as_ref()).await?;
    Ok(())
}

#[tokio::test]
async fn the_postgres_mirror_keeps_the_contract() -> anyhow::Result<()> {
    contract::mirror(&pg::fresh("contract").await?).await?;
    Ok(())
}
