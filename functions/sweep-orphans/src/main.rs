//! On an EventBridge schedule: delete media unreferenced past the grace period (`{"mode":
//! "sweep"}`), or recompute counts and list inconsistencies (`{"mode": "reconcile", "fix": false}`).
//! Glue only: the logic is `shared::lifecycle`.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::lifecycle::SweepCommand;
use shared::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let (app, blobs) = App::with_objects().await?;
    let ports = app.lifecycle(&*blobs);
    let ports = &ports;
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        // This function deletes: anything but a well-formed command fails the invocation.
        let command = SweepCommand::from_event(event.payload)?;
        let report = shared::lifecycle::run(ports, &command, time::OffsetDateTime::now_utc()).await?;
        Ok::<_, Error>(report)
    }))
    .await
}
