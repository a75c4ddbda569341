//! The AWS SDK's shared configuration and Secrets Manager reads: used by the wiring (`app`) and by
//! the Postgres mirror's connection (`store::postgres`), which is why they are neither's.

use aws_config::SdkConfig;

use crate::config::SdkTimeouts;

/// The SDK's shared config (`AWS_ENDPOINT_URL_*` point clients at emulators), every call bounded
/// by `timeouts`.
pub async fn sdk_config(timeouts: SdkTimeouts) -> SdkConfig {
    let bounds = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(timeouts.connect)
        .operation_attempt_timeout(timeouts.attempt())
        .operation_timeout(timeouts.operation)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(bounds).load().await
}

/// A Secrets Manager secret's string value (`id`: its name or ARN).
pub async fn secret_string(sdk: &SdkConfig, id: &str) -> Result<String, String> {
    let value = aws_sdk_secretsmanager::Client::new(sdk)
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| format!("reading {id}: {e:?}"))?;
    value.secret_string().map(str::to_owned).ok_or_else(|| format!("{id} holds no string"))
}
