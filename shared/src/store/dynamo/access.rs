//! The deny-list and the rate limiter's buckets in DynamoDB, in the quotas table (its key is one
//! string, and its TTL drops idle buckets):
//!
//! - `pk = "revocations"`: one item, `subjects` a map of subject → seconds (tokens issued before
//!   are refused; `u64::MAX`: every token). Each instance reads it once a minute.
//! - `pk = "rate#<class>#<sub>"`: a bucket, `tat` its theoretical arrival time in milliseconds.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use super::helpers::{applied, condition_failed, err, n, s, sdk_err};
use crate::access::{BucketStore, BucketWrite, BucketWritten, DenyList, Revocation, RevocationStore};
use crate::error::StoreError;

const DENY_LIST_KEY: &str = "revocations";

#[derive(Clone)]
pub struct DynamoAccess {
    client: Client,
    table: String,
}

impl DynamoAccess {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn key(pk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_string(), s(pk))])
}

fn tat_of(item: Option<&HashMap<String, AttributeValue>>) -> Option<u64> {
    item?.get("tat")?.as_n().ok()?.parse().ok()
}

#[async_trait]
impl RevocationStore for DynamoAccess {
    async fn deny_list(&self) -> Result<DenyList, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(DENY_LIST_KEY)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?
            .item;
        let subjects = item.as_ref().and_then(|i| i.get("subjects")).and_then(|v| v.as_m().ok());
        Ok(subjects
            .into_iter()
            .flatten()
            .filter_map(|(sub, v)| Some((sub.clone(), Revocation::from_secs(v.as_n().ok()?.parse().ok()?))))
            .collect())
    }

    async fn revoke(&self, sub: &str, how: Revocation) -> Result<(), StoreError> {
        // A map entry can only be set inside a map that exists: make sure of it first.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(DENY_LIST_KEY)))
            .update_expression("SET subjects = if_not_exists(subjects, :empty)")
            .expression_attribute_values(":empty", AttributeValue::M(HashMap::new()))
            .send()
            .await
            .map_err(sdk_err)?;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(DENY_LIST_KEY)))
            .update_expression("SET subjects.#sub = :secs")
            .expression_attribute_names("#sub", sub)
            .expression_attribute_values(":secs", n(how.as_secs()))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn unrevoke(&self, sub: &str) -> Result<bool, StoreError> {
        applied(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(DENY_LIST_KEY)))
                .update_expression("REMOVE subjects.#sub")
                .condition_expression("attribute_exists(subjects.#sub)")
                .expression_attribute_names("#sub", sub)
                .send()
                .await,
        )
    }
}

#[async_trait]
impl BucketStore for DynamoAccess {
    async fn write(&self, pk: &str, write: BucketWrite, expires_at: i64) -> Result<BucketWritten, StoreError> {
        let pk = format!("rate#{pk}");
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&pk)))
            .expression_attribute_names("#tat", "tat")
            .expression_attribute_values(":expires", n(expires_at))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = match write {
            BucketWrite::Advance { by, min, max } => request
                .update_expression("SET #tat = #tat + :by, expires_at = :expires")
                .condition_expression("#tat BETWEEN :min AND :max")
                .expression_attribute_values(":by", n(by))
                .expression_attribute_values(":min", n(min))
                .expression_attribute_values(":max", n(max)),
            BucketWrite::Restart { to, before } => request
                .update_expression("SET #tat = :to, expires_at = :expires")
                .condition_expression("attribute_not_exists(#tat) OR #tat < :before")
                .expression_attribute_values(":to", n(to))
                .expression_attribute_values(":before", n(before)),
        };
        match request.send().await {
            Ok(out) => tat_of(out.attributes.as_ref())
                .map(BucketWritten::Done)
                .ok_or_else(|| err("bucket write returned no time")),
            Err(e) if condition_failed(&e) => {
                if let Some(UpdateItemError::ConditionalCheckFailedException(c)) = e.as_service_error() {
                    if let Some(item) = c.item() {
                        return Ok(BucketWritten::Found(tat_of(Some(item))));
                    }
                }
                // An emulator that does not return the item: read it.
                let item = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(key(&pk)))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(sdk_err)?
                    .item;
                Ok(BucketWritten::Found(tat_of(item.as_ref())))
            }
            Err(e) => Err(sdk_err(e)),
        }
    }
}
