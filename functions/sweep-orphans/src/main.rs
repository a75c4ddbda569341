//! On an EventBridge schedule: delete media unreferenced past the grace period (`{"mode":
//! "sweep"}`), or recompute counts and list inconsistencies (`{"mode": "reconcile", "fix": false}`).
//! Glue only: the logic is `shared::lifecycle`.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::lifecycle::Command;
use shared::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::for_storage().await?;
    let app = &app;
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        // Anything that is not a command (a plain scheduled event) means the default sweep.
        let command: Command = serde_json::from_value(event.payload).unwrap_or_default();
        let report = shared::lifecycle::run(app, &command, time::OffsetDateTime::now_utc()).await?;
        Ok::<_, Error>(report)
    }))
    .await
}
