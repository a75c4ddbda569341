//! DynamoDB adapter for reference items: table `refs` (pk `note` = "deck#note_id", sk `filename`,
//! GSI `by_file` on `deck_file` = "deck#filename"). A step is one TransactWriteItems call that
//! also moves the media counts and the deck's filename index.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;

use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::store::refs::{Commit, NoteRef, RefOp, ReferenceStore, Step};

use super::deck_item;
use super::helpers::{err, n, request_token, s, sdk_err};

#[derive(Clone)]
pub struct DynamoRefs {
    client: Client,
    refs_table: String,
    media_table: String,
    deck_files_table: String,
}

impl DynamoRefs {
    pub fn new(client: Client, refs_table: &str, media_table: &str, deck_files_table: &str) -> Self {
        Self {
            client,
            refs_table: refs_table.into(),
            media_table: media_table.into(),
            deck_files_table: deck_files_table.into(),
        }
    }

    fn ref_item(
        deck: &str,
        note_id: &str,
        filename: &str,
        hash: &Sha256Hash,
        now: &str,
    ) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("note".into(), s(format!("{deck}#{note_id}"))),
            ("filename".into(), s(filename)),
            ("hash".into(), s(hash.to_hex())),
            ("deck".into(), s(deck)),
            ("note_id".into(), s(note_id)),
            ("deck_file".into(), s(format!("{deck}#{filename}"))),
            ("updated_at".into(), s(now)),
        ])
    }

    fn ref_key(deck: &str, note_id: &str, filename: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("note".into(), s(format!("{deck}#{note_id}"))), ("filename".into(), s(filename))])
    }

    fn items(
        &self,
        deck: &str,
        note_id: &str,
        step: &Step,
        now: &str,
    ) -> Result<(Vec<TransactWriteItem>, Vec<bool>), StoreError> {
        let mut items = Vec::with_capacity(step.items());
        // For each item: would its condition failing mean "the sweeper is deleting this hash"?
        let mut deleting_guard = Vec::with_capacity(step.items());
        for op in &step.ops {
            let item = match op {
                RefOp::Add { filename, hash } => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.refs_table)
                            .set_item(Some(Self::ref_item(deck, note_id, filename, hash, now)))
                            .condition_expression("attribute_not_exists(#note)")
                            .expression_attribute_names("#note", "note")
                            .build()
                            .map_err(err)?,
                    )
                    .build(),
                RefOp::Remove { filename, hash } => TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.refs_table)
                            .set_key(Some(Self::ref_key(deck, note_id, filename)))
                            .condition_expression("#hash = :hash")
                            .expression_attribute_names("#hash", "hash")
                            .expression_attribute_values(":hash", s(hash.to_hex()))
                            .build()
                            .map_err(err)?,
                    )
                    .build(),
                RefOp::Change { filename, from, to } => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.refs_table)
                            .set_item(Some(Self::ref_item(deck, note_id, filename, to, now)))
                            .condition_expression("#hash = :from")
                            .expression_attribute_names("#hash", "hash")
                            .expression_attribute_values(":from", s(from.to_hex()))
                            .build()
                            .map_err(err)?,
                    )
                    .build(),
            };
            items.push(item);
            deleting_guard.push(false);
        }
        for (hash, delta) in &step.media {
            let mut update = Update::builder()
                .table_name(&self.media_table)
                .key("hash", s(hash.to_hex()))
                .update_expression(
                    "SET #updated = :now, #status = if_not_exists(#status, :missing), \
                     #created = if_not_exists(#created, :now) ADD #refs :delta",
                )
                .expression_attribute_names("#updated", "updated_at")
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#created", "created_at")
                .expression_attribute_names("#refs", "ref_count")
                .expression_attribute_values(":now", s(now))
                .expression_attribute_values(":missing", s("missing"))
                .expression_attribute_values(":delta", n(delta));
            update = if *delta > 0 {
                // A hash the sweeper is deleting cannot gain a reference until it is gone; nor can
                // an alias (the hash of converted bytes), which may have appeared since the
                // request's hashes were looked up: its references belong to its original, which
                // the sweep would otherwise delete, alias and bytes, under a live reference.
                update
                    .condition_expression(
                        "attribute_not_exists(#alias) AND (attribute_not_exists(#status) OR #status <> :deleting)",
                    )
                    .expression_attribute_names("#alias", "alias_of")
                    .expression_attribute_values(":deleting", s("deleting"))
            } else {
                // Counts never go below zero.
                update.condition_expression("#refs >= :need").expression_attribute_values(":need", n(-delta))
            };
            items.push(TransactWriteItem::builder().update(update.build().map_err(err)?).build());
            deleting_guard.push(*delta > 0);
        }
        for (filename, change) in &step.deck_files {
            // SET #updated, each added version's time; ADD the note counts (all, and per hash).
            let mut sets = vec!["#updated = :now".to_string()];
            let mut adds = Vec::new();
            let mut update = Update::builder()
                .table_name(&self.deck_files_table)
                .key("deck", s(deck))
                .key("filename", s(filename))
                .expression_attribute_names("#updated", "updated_at")
                .expression_attribute_values(":now", s(now));
            if change.notes != 0 {
                adds.push("#notes :delta".to_string());
                update = update
                    .expression_attribute_names("#notes", "notes")
                    .expression_attribute_values(":delta", n(change.notes));
            }
            for (i, (hash, delta)) in change.versions.iter().enumerate() {
                adds.push(format!("#c{i} :c{i}"));
                update = update
                    .expression_attribute_names(format!("#c{i}"), deck_item::count_attr(hash))
                    .expression_attribute_values(format!(":c{i}"), n(delta));
                if change.added.contains(hash) {
                    sets.push(format!("#a{i} = :now"));
                    update = update.expression_attribute_names(format!("#a{i}"), deck_item::added_attr(hash));
                }
            }
            let mut expr = format!("SET {}", sets.join(", "));
            if !adds.is_empty() {
                expr.push_str(&format!(" ADD {}", adds.join(", ")));
            }
            items.push(
                TransactWriteItem::builder().update(update.update_expression(expr).build().map_err(err)?).build(),
            );
            deleting_guard.push(false);
        }
        Ok((items, deleting_guard))
    }
}

impl DynamoRefs {
    /// Best effort, after a commit: drop versions no note uses any more, and index entries no note
    /// uses at all. Readers ignore both, so what a crash leaves behind is harmless.
    async fn tidy(&self, deck: &str, step: &Step) {
        for (filename, change) in &step.deck_files {
            for (hash, _) in change.versions.iter().filter(|(_, d)| **d < 0) {
                let _ = self
                    .client
                    .update_item()
                    .table_name(&self.deck_files_table)
                    .key("deck", s(deck))
                    .key("filename", s(filename))
                    .update_expression("REMOVE #c, #a")
                    .condition_expression("#c <= :zero")
                    .expression_attribute_names("#c", deck_item::count_attr(hash))
                    .expression_attribute_names("#a", deck_item::added_attr(hash))
                    .expression_attribute_values(":zero", n(0))
                    .send()
                    .await;
            }
            if change.notes < 0 {
                let _ = self
                    .client
                    .delete_item()
                    .table_name(&self.deck_files_table)
                    .key("deck", s(deck))
                    .key("filename", s(filename))
                    .condition_expression("#notes <= :zero")
                    .expression_attribute_names("#notes", "notes")
                    .expression_attribute_values(":zero", n(0))
                    .send()
                    .await;
            }
        }
    }
}

#[async_trait]
impl ReferenceStore for DynamoRefs {
    async fn note_refs(&self, deck: &str, note_id: &str) -> Result<BTreeMap<String, Sha256Hash>, StoreError> {
        let mut items = self
            .client
            .query()
            .table_name(&self.refs_table)
            .key_condition_expression("#note = :note")
            .expression_attribute_names("#note", "note")
            .expression_attribute_values(":note", s(format!("{deck}#{note_id}")))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut out = BTreeMap::new();
        while let Some(item) = items.next().await {
            let r = note_ref(&item.map_err(sdk_err)?)?;
            out.insert(r.filename, r.hash);
        }
        Ok(out)
    }

    async fn commit(&self, deck: &str, note_id: &str, step: &Step, now: &str) -> Result<Commit, StoreError> {
        let (items, deleting_guard) = self.items(deck, note_id, step, now)?;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(request_token())
            .send()
            .await;
        let e = match result {
            Ok(_) => {
                self.tidy(deck, step).await;
                return Ok(Commit::Done);
            }
            Err(e) => e,
        };
        let Some(service) = e.as_service_error() else { return Err(err(format!("{e:?}"))) };
        if let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) = service {
            let reasons = c.cancellation_reasons();
            let deleting = reasons
                .iter()
                .zip(&deleting_guard)
                .any(|(r, guard)| *guard && r.code() == Some("ConditionalCheckFailed"));
            if reasons.iter().all(|r| matches!(r.code(), None | Some("None") | Some("ConditionalCheckFailed"))) {
                return Ok(if deleting { Commit::Deleting } else { Commit::Conflict });
            }
            // TransactionConflict: another transaction touched the same items; plan again.
            if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                return Ok(Commit::Conflict);
            }
        }
        Err(err(format!("transaction failed: {service:?}")))
    }

    async fn file_refs(&self, deck: &str, filename: &str) -> Result<Vec<NoteRef>, StoreError> {
        let mut items = self
            .client
            .query()
            .table_name(&self.refs_table)
            .index_name("by_file")
            .key_condition_expression("#df = :df")
            .expression_attribute_names("#df", "deck_file")
            .expression_attribute_values(":df", s(format!("{deck}#{filename}")))
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(item) = items.next().await {
            out.push(note_ref(&item.map_err(sdk_err)?)?);
        }
        Ok(out)
    }

    async fn count_all(&self) -> Result<BTreeMap<Sha256Hash, i64>, StoreError> {
        let mut items = self
            .client
            .scan()
            .table_name(&self.refs_table)
            .projection_expression("#hash")
            .expression_attribute_names("#hash", "hash")
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut out = BTreeMap::new();
        while let Some(item) = items.next().await {
            let item = item.map_err(sdk_err)?;
            let hash = item.get("hash").and_then(|v| v.as_s().ok()).ok_or_else(|| err("ref without hash"))?;
            *out.entry(Sha256Hash::parse(hash).map_err(err)?).or_default() += 1;
        }
        Ok(out)
    }
}

/// A reference item as stored (the projection of `by_file` includes every attribute).
fn note_ref(item: &HashMap<String, AttributeValue>) -> Result<NoteRef, StoreError> {
    let get = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().ok_or_else(|| err(format!("ref without {k}")));
    Ok(NoteRef {
        note_id: get("note_id")?,
        filename: get("filename")?,
        hash: Sha256Hash::parse(&get("hash")?).map_err(err)?,
    })
}
