//! Structured logs: JSON on Lambda (CloudWatch parses it), compact text elsewhere.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

/// `RUST_LOG` as comma-separated `level` or `target=level` directives (`info`,
/// `info,shared=debug`); anything else means `info`. Targets rather than EnvFilter: no regex
/// engine in every binary (BENCHMARKS.md, "Deployable binaries").
fn filter() -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

pub fn init() {
    let result = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        // Lambda adds its own timestamps and request ids.
        let layer = fmt::layer().json().without_time().with_current_span(false).with_target(false);
        tracing_subscriber::registry().with(layer.with_filter(filter())).try_init()
    } else {
        let layer = fmt::layer().compact().with_writer(std::io::stderr);
        tracing_subscriber::registry().with(layer.with_filter(filter())).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse() {
        let t: Targets = "info,shared=debug".parse().unwrap();
        assert!(t.would_enable("shared::process", &tracing::Level::DEBUG));
        assert!(!t.would_enable("aws_smithy_runtime", &tracing::Level::DEBUG));
        assert!(t.would_enable("aws_smithy_runtime", &tracing::Level::INFO));
    }
}
