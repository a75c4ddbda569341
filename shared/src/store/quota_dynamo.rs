//! Daily upload allowances in DynamoDB: a counter item per user and day, and a hold item per
//! (user, day, hash), written together in one transaction so a hold is charged exactly once.
//! Both expire through the table's TTL (`expires_at`) two days after their day.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;

use super::dynamo::{backoff, err, n, s, sdk_err};
use super::{Hold, QuotaStore, Reserve};
use crate::error::StoreError;

#[derive(Clone)]
pub struct DynamoQuotas {
    client: Client,
    table: String,
}

impl DynamoQuotas {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn usage_key(user: &str, day: &str) -> String {
    format!("usage#{day}#{user}")
}

fn hold_key(h: &Hold) -> String {
    format!("hold#{}#{}#{}", h.day, h.user, h.hash)
}

/// Seconds since the epoch at which DynamoDB's TTL may drop items of `day`.
fn expiry(day: &str) -> i64 {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(day, &format).map(|d| d.midnight().assume_utc().unix_timestamp() + 2 * 86_400).unwrap_or(0)
}

fn key(pk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_string(), s(pk))])
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[async_trait]
impl QuotaStore for DynamoQuotas {
    async fn reserve(&self, hold: &Hold, max_bytes: u64, max_files: u64) -> Result<Reserve, StoreError> {
        if hold.bytes > max_bytes || max_files == 0 {
            return Ok(Reserve::Exceeded);
        }
        let put_hold = Put::builder()
            .table_name(&self.table)
            .item("pk", s(hold_key(hold)))
            .item("bytes", n(hold.bytes))
            .item("expires_at", n(expiry(&hold.day)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(err)?;
        // Within the limits after adding: bytes + new <= max, written as bytes <= max - new.
        let charge = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(usage_key(&hold.user, &hold.day))))
            .update_expression("ADD #bytes :bytes, #files :one SET #expires = :expires")
            .condition_expression("attribute_not_exists(pk) OR (#bytes <= :bytes_room AND #files <= :files_room)")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_names("#files", "files")
            .expression_attribute_names("#expires", "expires_at")
            .expression_attribute_values(":bytes", n(hold.bytes))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":expires", n(expiry(&hold.day)))
            .expression_attribute_values(":bytes_room", n(max_bytes - hold.bytes))
            .expression_attribute_values(":files_room", n(max_files - 1))
            .build()
            .map_err(err)?;
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put_hold.clone()).build())
                .transact_items(TransactWriteItem::builder().update(charge.clone()).build())
                .send()
                .await;
            let e = match result {
                Ok(_) => return Ok(Reserve::Granted),
                Err(e) => e,
            };
            use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
            if let Some(E::TransactionCanceledException(c)) = e.as_service_error() {
                let reasons = c.cancellation_reasons();
                let failed = |i: usize| reasons.get(i).and_then(|r| r.code()) == Some("ConditionalCheckFailed");
                if failed(0) {
                    return Ok(Reserve::AlreadyHeld);
                }
                if failed(1) {
                    return Ok(Reserve::Exceeded);
                }
                // Another request of the same user charged the counter at the same moment.
                if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                    backoff(attempt).await?;
                    attempt += 1;
                    continue;
                }
            }
            return Err(sdk_err(e));
        }
    }

    async fn release(&self, hold: &Hold) -> Result<(), StoreError> {
        let delete_hold = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(hold_key(hold))))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(err)?;
        let refund = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(usage_key(&hold.user, &hold.day))))
            .update_expression("ADD #bytes :bytes, #files :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_names("#files", "files")
            .expression_attribute_values(":bytes", n(-(hold.bytes as i128)))
            .expression_attribute_values(":one", n(-1))
            .build()
            .map_err(err)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete_hold).build())
            .transact_items(TransactWriteItem::builder().update(refund).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // No hold (released already): nothing to give back.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_transaction_canceled_exception()) => Ok(()),
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn usage(&self, user: &str, day: &str) -> Result<(u64, u64), StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(usage_key(user, day))))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?
            .item
            .unwrap_or_default();
        Ok((number(&item, "bytes"), number(&item, "files")))
    }
}
