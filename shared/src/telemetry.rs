//! Structured logs: JSON on Lambda (CloudWatch parses it), compact text elsewhere.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        // Lambda adds its own timestamps and request ids.
        builder.json().without_time().with_current_span(false).with_target(false).try_init()
    } else {
        builder.compact().with_writer(std::io::stderr).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
