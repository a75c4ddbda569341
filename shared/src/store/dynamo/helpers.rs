//! What every DynamoDB adapter shares: error mapping, attribute shorthands, the one test for "a
//! condition did not hold", the one backoff and the one `BatchGetItem` loop.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::error::StoreError;

/// BatchGetItem takes at most 100 keys.
const BATCH_GET: usize = 100;
/// Parallel batch calls per request.
const PARALLEL: usize = 8;

pub(super) fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new("dynamodb", e)
}

pub(super) fn sdk_err<E: ProvideErrorMetadata + std::fmt::Debug>(e: SdkError<E>) -> StoreError {
    let detail = e.as_service_error().and_then(|s| s.message().map(str::to_owned));
    err(detail.unwrap_or_else(|| format!("{e:?}")))
}

/// A transaction's idempotency token (`ClientRequestToken`): the SDK's retries of one call send
/// the same one, so a transaction whose answer was lost is not applied twice.
pub(super) fn request_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The write did not happen because a condition did not hold: a single write's condition
/// (`ConditionalCheckFailedException`) or a transaction's (`TransactionCanceledException`).
pub(super) fn condition_failed<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    matches!(
        e.as_service_error().and_then(|s| s.code()),
        Some("ConditionalCheckFailedException" | "TransactionCanceledException")
    )
}

/// `Ok(true)` if a conditional write happened, `Ok(false)` if its condition did not hold.
pub(super) fn applied<O, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<O, SdkError<E>>,
) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if condition_failed(&e) => Ok(false),
        Err(e) => Err(sdk_err(e)),
    }
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Waits before asking again for what a call left unprocessed (DynamoDB does under load); an
/// error once it has asked eight times.
pub(super) async fn backoff(attempt: u32) -> Result<(), StoreError> {
    if attempt >= 8 {
        return Err(err("batch call kept returning unprocessed items"));
    }
    tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
    Ok(())
}

/// Every item a `BatchGetItem` of `request` on `table` finds, asking again (with backoff) for
/// the keys DynamoDB leaves unprocessed under load.
pub(super) async fn batch_get(
    client: &Client,
    table: &str,
    mut request: KeysAndAttributes,
) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
    let mut out = Vec::with_capacity(request.keys.len());
    for attempt in 0.. {
        let resp = client.batch_get_item().request_items(table, request).send().await.map_err(sdk_err)?;
        out.extend(resp.responses.and_then(|mut r| r.remove(table)).unwrap_or_default());
        match resp.unprocessed_keys.and_then(|mut u| u.remove(table)) {
            Some(rest) if !rest.keys.is_empty() => {
                request = rest;
                backoff(attempt).await?;
            }
            _ => break,
        }
    }
    Ok(out)
}

/// `read` on each batch of `keys` that one `BatchGetItem` can take, a few at a time, after
/// dropping repeated keys; everything they found.
pub(super) async fn in_batches<K, R, F, Fut>(keys: &[K], read: F) -> Result<Vec<R>, StoreError>
where
    K: Clone + Ord,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, StoreError>>,
{
    let mut unique = keys.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let batches: Vec<Vec<K>> = unique.chunks(BATCH_GET).map(<[_]>::to_vec).collect();
    let found: Vec<Vec<R>> = stream::iter(batches).map(read).buffer_unordered(PARALLEL).try_collect().await?;
    Ok(found.into_iter().flatten().collect())
}
