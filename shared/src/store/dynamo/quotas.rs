//! Daily upload allowances in DynamoDB: a counter item per user and day, and a hold item per
//! (user, day, hash), written together in one transaction so a hold is charged exactly once.
//! Both expire through the table's TTL (`expires_at`) two days after their day.
//!
//! A pending hold carries `pending` (its hash) and `issued_at`, the keys of the sparse GSI
//! `pending`: processing finds a hash's pending holds there, and the sweep finds the stale ones
//! by scanning it, which reads only holds still pending. Settling removes `pending`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;

use super::helpers::{applied, backoff, err, n, request_token, s, sdk_err};
use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::store::{Hold, QuotaStore, Reserve, Settlement};

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

/// The sparse index of pending holds.
pub const PENDING_INDEX: &str = "pending";

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

fn string<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// A hold as the index returns it; `None` for an item that is not one.
fn hold_of(item: &HashMap<String, AttributeValue>) -> Option<Hold> {
    Some(Hold {
        user: string(item, "user")?.to_string(),
        day: string(item, "day")?.to_string(),
        hash: Sha256Hash::parse(string(item, "hash")?).ok()?,
        bytes: number(item, "bytes"),
    })
}

impl DynamoQuotas {
    async fn holds_in_index(
        &self,
        query: Option<&Sha256Hash>,
        issued_before: Option<&str>,
    ) -> Result<Vec<Hold>, StoreError> {
        let mut out = Vec::new();
        if let Some(hash) = query {
            let mut items = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(PENDING_INDEX)
                .key_condition_expression("#pending = :hash")
                .expression_attribute_names("#pending", "pending")
                .expression_attribute_values(":hash", s(hash.to_hex()))
                .into_paginator()
                .items()
                .send();
            while let Some(item) = items.next().await {
                out.extend(hold_of(&item.map_err(sdk_err)?));
            }
        } else {
            let mut req = self.client.scan().table_name(&self.table).index_name(PENDING_INDEX);
            if let Some(before) = issued_before {
                req = req
                    .filter_expression("#issued < :before")
                    .expression_attribute_names("#issued", "issued_at")
                    .expression_attribute_values(":before", s(before));
            }
            let mut items = req.into_paginator().items().send();
            while let Some(item) = items.next().await {
                out.extend(hold_of(&item.map_err(sdk_err)?));
            }
        }
        Ok(out)
    }

    /// The user holds this hash already. If the hold is pending for this very size, a new URL is
    /// about to be issued: move its issue time to `now`, so that the sweep waits for this URL too.
    /// Answers `None` when the hold has gone meanwhile.
    async fn refresh(&self, hold: &Hold, now: &str) -> Result<Option<Reserve>, StoreError> {
        let refreshed = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(hold_key(hold))))
            .update_expression("SET #issued = :now")
            .condition_expression("attribute_exists(#pending) AND #bytes = :bytes")
            .expression_attribute_names("#issued", "issued_at")
            .expression_attribute_names("#pending", "pending")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":bytes", n(hold.bytes))
            .send()
            .await;
        if applied(refreshed)? {
            return Ok(Some(Reserve::AlreadyHeld));
        }
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(hold_key(hold))))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?
            .item;
        Ok(item.map(|item| {
            let held = number(&item, "bytes");
            if item.contains_key("pending") && held != hold.bytes {
                Reserve::OtherSize { held }
            } else {
                // Settled: the bytes are stored (processing decides what the answer is).
                Reserve::AlreadyHeld
            }
        }))
    }

    /// Settle one hold: drop its `pending` mark (stored), or delete it and give its bytes back
    /// (rejected). Conditional on it still being pending, so each hold settles once.
    async fn settle_one(&self, hold: &Hold, outcome: Settlement) -> Result<bool, StoreError> {
        match outcome {
            Settlement::Stored => applied(
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(hold_key(hold))))
                    .update_expression("REMOVE #pending")
                    .condition_expression("attribute_exists(#pending)")
                    .expression_attribute_names("#pending", "pending")
                    .send()
                    .await,
            ),
            // The file was refused: its bytes are given back, its file is still counted.
            Settlement::Rejected => self.give_back(hold, false).await,
        }
    }

    /// Delete a hold that is still pending and give its bytes back (and its file, with `file`),
    /// in one transaction; `false` if it was no longer pending (released or settled already).
    async fn give_back(&self, hold: &Hold, file: bool) -> Result<bool, StoreError> {
        let delete_hold = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(hold_key(hold))))
            .condition_expression("attribute_exists(#pending)")
            .expression_attribute_names("#pending", "pending")
            .build()
            .map_err(err)?;
        let mut refund = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(usage_key(&hold.user, &hold.day))))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_values(":bytes", n(-(hold.bytes as i128)));
        refund = if file {
            refund
                .update_expression("ADD #bytes :bytes, #files :one")
                .expression_attribute_names("#files", "files")
                .expression_attribute_values(":one", n(-1))
        } else {
            refund.update_expression("ADD #bytes :bytes")
        };
        applied(
            self.client
                .transact_write_items()
                .client_request_token(request_token())
                .transact_items(TransactWriteItem::builder().delete(delete_hold).build())
                .transact_items(TransactWriteItem::builder().update(refund.build().map_err(err)?).build())
                .send()
                .await,
        )
    }
}

#[async_trait]
impl QuotaStore for DynamoQuotas {
    async fn reserve(&self, hold: &Hold, now: &str, max_bytes: u64, max_files: u64) -> Result<Reserve, StoreError> {
        if hold.bytes > max_bytes || max_files == 0 {
            return Ok(Reserve::Exceeded);
        }
        let put_hold = Put::builder()
            .table_name(&self.table)
            .item("pk", s(hold_key(hold)))
            .item("user", s(&hold.user))
            .item("day", s(&hold.day))
            .item("hash", s(hold.hash.to_hex()))
            .item("bytes", n(hold.bytes))
            .item("pending", s(hold.hash.to_hex()))
            .item("issued_at", s(now))
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
                .client_request_token(request_token())
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
                    match self.refresh(hold, now).await? {
                        Some(outcome) => return Ok(outcome),
                        // Released since (an unused URL given back): charge it afresh.
                        None => {
                            backoff(attempt).await?;
                            attempt += 1;
                            continue;
                        }
                    }
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
        // No pending hold (released or settled already): nothing to give back.
        self.give_back(hold, true).await.map(drop)
    }

    async fn settle(&self, hash: &Sha256Hash, outcome: Settlement) -> Result<usize, StoreError> {
        let mut settled = 0;
        for hold in self.holds_in_index(Some(hash), None).await? {
            settled += usize::from(self.settle_one(&hold, outcome).await?);
        }
        Ok(settled)
    }

    async fn release_unused(&self, issued_before: &str) -> Result<usize, StoreError> {
        let stale = self.holds_in_index(None, Some(issued_before)).await?;
        for hold in &stale {
            self.release(hold).await?;
        }
        Ok(stale.len())
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
