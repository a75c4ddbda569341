//! The media table (pk `hash`): one record per file, its status, what was stored and its count of
//! references.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;

use super::helpers::{applied, batch_get, condition_failed, err, in_batches, n, s, sdk_err};
use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::model::{MediaRecord, MediaStatus, RejectReason, StoredMedia};
use crate::store::{BeginUpload, MediaRepo, PendingUpload};

/// What `get_many` reads of a media record: what answers to clients use. Parsing the SDK's
/// attribute maps is most of a bulk download's CPU (BENCHMARKS.md), so the rest stays behind.
const ANSWER_FIELDS: [&str; 13] = [
    "hash",
    "status",
    "size",
    "stored_size",
    "content_type",
    "width",
    "height",
    "duration_ms",
    "reason",
    "stored_key",
    "thumb_key",
    "stored_hash",
    "alias_of",
];

#[derive(Clone)]
pub struct DynamoMedia {
    client: Client,
    table: String,
}

impl DynamoMedia {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    fn key(hash: &Sha256Hash) -> HashMap<String, AttributeValue> {
        HashMap::from([("hash".to_string(), s(hash.to_hex()))])
    }

    /// A deleting record made `missing` (its bytes may be gone): the caller adds the condition.
    fn deleting_to_missing(
        &self,
        hash: &Sha256Hash,
        now: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(hash)))
            .update_expression("SET #status = :missing, #updated = :now REMOVE #key, #thumb, #until")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#key", "stored_key")
            .expression_attribute_names("#thumb", "thumb_key")
            .expression_attribute_names("#until", "deleting_until")
            .expression_attribute_values(":deleting", s("deleting"))
            .expression_attribute_values(":missing", s("missing"))
            .expression_attribute_values(":now", s(now))
    }

    async fn get_batch(&self, batch: Vec<Sha256Hash>) -> Result<Vec<MediaRecord>, StoreError> {
        let keys: Vec<_> = batch.iter().map(Self::key).collect();
        // Several of these names are DynamoDB reserved words, so all go through placeholders.
        let names = ANSWER_FIELDS.iter().enumerate().map(|(i, f)| (format!("#f{i}"), f.to_string())).collect();
        let projection = (0..ANSWER_FIELDS.len()).map(|i| format!("#f{i}")).collect::<Vec<_>>().join(",");
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .projection_expression(projection)
            .set_expression_attribute_names(Some(names))
            .build()
            .map_err(err)?;
        let items = batch_get(&self.client, &self.table, request).await?;
        items.into_iter().map(|item| serde_dynamo::from_item(item).map_err(err)).collect()
    }
}

#[async_trait]
impl MediaRepo for DynamoMedia {
    async fn get(&self, hash: &Sha256Hash) -> Result<Option<MediaRecord>, StoreError> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(hash)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        resp.item.map(|i| serde_dynamo::from_item(i).map_err(err)).transpose()
    }

    async fn get_many(&self, hashes: &[Sha256Hash]) -> Result<HashMap<Sha256Hash, MediaRecord>, StoreError> {
        let records = in_batches(hashes, |batch| self.get_batch(batch)).await?;
        Ok(records.into_iter().map(|r: MediaRecord| (r.hash, r)).collect())
    }

    async fn begin_upload(&self, u: &PendingUpload<'_>) -> Result<BeginUpload, StoreError> {
        let retry_values: HashMap<String, AttributeValue> =
            RejectReason::RETRYABLE.iter().enumerate().map(|(i, r)| (format!(":retry{i}"), s(r.code()))).collect();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&u.hash)))
            .update_expression(
                "SET #status = :pending, #size = :size, #uploader = :uploader, #expires = :expires, \
                 #updated = :now, #created = if_not_exists(#created, :now), #refs = if_not_exists(#refs, :zero) \
                 REMOVE #reason",
            )
            // As `MediaRecord::finally_rejected` says: a rejection without a final reason may be
            // retried. Another user's pending upload is left alone while its URL may still be used.
            .condition_expression(format!(
                "attribute_not_exists(#alias) AND (attribute_not_exists(#hash) OR #status = :missing \
                 OR (#status = :pending AND (attribute_not_exists(#uploader) OR #uploader = :uploader \
                 OR attribute_not_exists(#expires) OR #expires < :now)) \
                 OR (#status = :rejected AND (attribute_not_exists(#reason) OR #reason IN ({}))))",
                retry_values.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
            .set_expression_attribute_values(Some(retry_values))
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#size", "size")
            .expression_attribute_names("#uploader", "uploader")
            .expression_attribute_names("#expires", "upload_expires_at")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#created", "created_at")
            .expression_attribute_names("#refs", "ref_count")
            .expression_attribute_names("#reason", "reason")
            .expression_attribute_names("#alias", "alias_of")
            .expression_attribute_names("#hash", "hash")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":missing", s("missing"))
            .expression_attribute_values(":rejected", s("rejected"))
            .expression_attribute_values(":size", n(u.size))
            .expression_attribute_values(":uploader", s(u.uploader))
            .expression_attribute_values(":expires", s(u.expires_at))
            .expression_attribute_values(":now", s(u.now))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(BeginUpload::Started),
            Err(e) if condition_failed(&e) => {
                // Ready, an alias, or finally rejected: say which.
                match self.get(&u.hash).await? {
                    Some(r) if r.status == MediaStatus::Rejected => {
                        Ok(BeginUpload::Rejected(r.reason.unwrap_or(RejectReason::UnsupportedType)))
                    }
                    Some(r) if r.status == MediaStatus::Deleting => Ok(BeginUpload::Busy),
                    Some(r) if r.status == MediaStatus::Pending => Ok(BeginUpload::Shared),
                    _ => Ok(BeginUpload::AlreadyReady),
                }
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn mark_ready(&self, hash: &Sha256Hash, st: &StoredMedia, now: &str) -> Result<bool, StoreError> {
        let mut set = vec![
            "#status = :ready",
            "#stored_key = :stored_key",
            "#content_type = :ct",
            "#size = :size",
            "#stored_size = :stored_size",
            "#stored_hash = :stored_hash",
            "#updated = :now",
        ];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(hash)))
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#stored_key", "stored_key")
            .expression_attribute_names("#content_type", "content_type")
            .expression_attribute_names("#size", "size")
            .expression_attribute_names("#stored_size", "stored_size")
            .expression_attribute_names("#stored_hash", "stored_hash")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#reason", "reason")
            .expression_attribute_names("#expires", "upload_expires_at")
            .expression_attribute_names("#hash", "hash")
            .expression_attribute_values(":deleting", s("deleting"))
            .expression_attribute_values(":ready", s("ready"))
            .expression_attribute_values(":stored_key", s(&st.stored_key))
            .expression_attribute_values(":ct", s(&st.content_type))
            .expression_attribute_values(":size", n(st.size))
            .expression_attribute_values(":stored_size", n(st.stored_size))
            .expression_attribute_values(":stored_hash", s(st.stored_hash.to_hex()))
            .expression_attribute_values(":now", s(now));
        if let Some(t) = &st.thumb_key {
            set.push("#thumb = :thumb");
            req = req.expression_attribute_names("#thumb", "thumb_key").expression_attribute_values(":thumb", s(t));
        }
        if let (Some(w), Some(h)) = (st.width, st.height) {
            set.push("#w = :w");
            set.push("#h = :h");
            req = req
                .expression_attribute_names("#w", "width")
                .expression_attribute_names("#h", "height")
                .expression_attribute_values(":w", n(w))
                .expression_attribute_values(":h", n(h));
        }
        if let Some(d) = st.duration_ms {
            set.push("#duration = :duration");
            req = req
                .expression_attribute_names("#duration", "duration_ms")
                .expression_attribute_values(":duration", n(d));
        }
        // Only onto a live record: one the sweeper is deleting (or has deleted) must not turn
        // ready, since its object may be gone.
        let result = req
            .update_expression(format!("SET {} REMOVE #reason, #expires", set.join(", ")))
            .condition_expression("attribute_exists(#hash) AND #status <> :deleting")
            .send()
            .await;
        applied(result)
    }

    async fn mark_rejected(&self, hash: &Sha256Hash, reason: RejectReason, now: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(hash)))
            .update_expression(
                "SET #status = :rejected, #reason = :reason, #updated = :now, \
                 #created = if_not_exists(#created, :now), #refs = if_not_exists(#refs, :zero)",
            )
            .condition_expression("attribute_not_exists(#status) OR (#status <> :ready AND #status <> :deleting)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#reason", "reason")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#created", "created_at")
            .expression_attribute_names("#refs", "ref_count")
            .expression_attribute_values(":rejected", s("rejected"))
            .expression_attribute_values(":ready", s("ready"))
            .expression_attribute_values(":deleting", s("deleting"))
            .expression_attribute_values(":reason", s(reason.code()))
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        applied(result).map(drop)
    }

    async fn put_alias(&self, alias: &Sha256Hash, target: &Sha256Hash, now: &str) -> Result<(), StoreError> {
        let mut record = MediaRecord::new(*alias, MediaStatus::Ready);
        record.alias_of = Some(*target);
        record.created_at = Some(now.into());
        record.updated_at = Some(now.into());
        let item = serde_dynamo::to_item(&record).map_err(err)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#hash)")
            .expression_attribute_names("#hash", "hash")
            .send()
            .await;
        applied(result).map(drop)
    }
    async fn ensure_record(&self, hash: &Sha256Hash, now: &str) -> Result<Option<MediaRecord>, StoreError> {
        let resp = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(hash)))
            .update_expression(
                "SET #status = if_not_exists(#status, :pending), #created = if_not_exists(#created, :now), \
                 #updated = if_not_exists(#updated, :now), #refs = if_not_exists(#refs, :zero)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#created", "created_at")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#refs", "ref_count")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":zero", n(0))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(sdk_err)?;
        resp.attributes.map(|a| serde_dynamo::from_item(a).map_err(err)).transpose()
    }

    async fn unreferenced(&self) -> Result<Vec<MediaRecord>, StoreError> {
        self.scan(Some("#refs = :zero AND attribute_not_exists(#alias)")).await
    }

    async fn begin_delete(
        &self,
        hash: &Sha256Hash,
        seen_updated_at: Option<&str>,
        now: &str,
        until: &str,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(hash)))
            .update_expression("SET #status = :deleting, #updated = :now, #until = :until")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#refs", "ref_count")
            .expression_attribute_names("#until", "deleting_until")
            .expression_attribute_values(":deleting", s("deleting"))
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":until", s(until))
            .expression_attribute_values(":zero", n(0));
        req = match seen_updated_at {
            Some(seen) => req
                .condition_expression("#refs = :zero AND #status <> :deleting AND #updated = :seen")
                .expression_attribute_values(":seen", s(seen)),
            None => {
                req.condition_expression("#refs = :zero AND #status <> :deleting AND attribute_not_exists(#updated)")
            }
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn renew_delete(&self, hash: &Sha256Hash, until: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(hash)))
            .update_expression("SET #until = :until")
            .condition_expression("#status = :deleting")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#until", "deleting_until")
            .expression_attribute_values(":deleting", s("deleting"))
            .expression_attribute_values(":until", s(until))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn take_back(&self, hash: &Sha256Hash, seen_until: Option<&str>, now: &str) -> Result<bool, StoreError> {
        let req = self.deleting_to_missing(hash, now);
        let req = match seen_until {
            Some(seen) => req
                .condition_expression("#status = :deleting AND #until = :seen")
                .expression_attribute_values(":seen", s(seen)),
            None => req.condition_expression("#status = :deleting AND attribute_not_exists(#until)"),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn finish_delete(&self, hash: &Sha256Hash, now: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(hash)))
            .condition_expression("#status = :deleting AND #refs = :zero")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#refs", "ref_count")
            .expression_attribute_values(":deleting", s("deleting"))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => {
                // A reference arrived after all: the bytes are gone, so the hash is missing. If
                // this fails, the record stays `deleting` until its claim expires and the next
                // reference takes it back (`lifecycle::take_back`).
                let missing =
                    self.deleting_to_missing(hash, now).condition_expression("#status = :deleting").send().await;
                match missing {
                    Err(e) if !condition_failed(&e) => Err(sdk_err(e)),
                    _ => Ok(false),
                }
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn delete_alias(&self, alias: &Sha256Hash, target: &Sha256Hash) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(alias)))
            .condition_expression("#alias = :target")
            .expression_attribute_names("#alias", "alias_of")
            .expression_attribute_values(":target", s(target.to_hex()))
            .send()
            .await;
        applied(result).map(drop)
    }

    async fn set_ref_count(&self, hash: &Sha256Hash, seen: i64, actual: i64, now: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(hash)))
            .update_expression("SET #refs = :actual, #updated = :now")
            .condition_expression("#refs = :seen")
            .expression_attribute_names("#refs", "ref_count")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_values(":actual", n(actual))
            .expression_attribute_values(":seen", n(seen))
            .expression_attribute_values(":now", s(now))
            .send()
            .await;
        applied(result)
    }

    async fn scan_all(&self) -> Result<Vec<MediaRecord>, StoreError> {
        self.scan(None).await
    }
}

impl DynamoMedia {
    async fn scan(&self, filter: Option<&str>) -> Result<Vec<MediaRecord>, StoreError> {
        let mut req = self.client.scan().table_name(&self.table).consistent_read(true);
        if let Some(f) = filter {
            req = req
                .filter_expression(f)
                .expression_attribute_names("#refs", "ref_count")
                .expression_attribute_names("#alias", "alias_of")
                .expression_attribute_values(":zero", n(0));
        }
        let mut items = req.into_paginator().items().send();
        let mut out = Vec::new();
        while let Some(item) = items.next().await {
            out.push(serde_dynamo::from_item(item.map_err(sdk_err)?).map_err(err)?);
        }
        Ok(out)
    }
}
