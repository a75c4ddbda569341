//! S3 ObjectCreated on the upload prefix. Glue only: the logic is `shared::process`.
//!
//! A storage error fails the invocation so that Lambda retries the event; refusing a file is a
//! normal outcome recorded on the media record.

use aws_lambda_events::s3::S3Event;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let (app, blobs) = App::with_objects().await?;
    let ports = app.processing(&*blobs);
    let ports = &ports;
    run(service_fn(move |event: LambdaEvent<S3Event>| async move {
        shared::process::handle_s3_event(ports, &event.payload).await?;
        Ok::<(), Error>(())
    }))
    .await
}
