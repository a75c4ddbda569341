//! The deck-files table (pk `deck`, sk `filename`): each deck's filename → hash index, written by
//! the reference transactions ([`super::DynamoRefs`]) and read here.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;

use super::deck_item;
use super::helpers::{batch_get, err, in_batches, n, s, sdk_err};
use crate::error::StoreError;
use crate::hash::Sha256Hash;
use crate::store::{DeckEntry, DeckFile, DeckIndex, DeckPage};

#[derive(Clone)]
pub struct DynamoDecks {
    client: Client,
    table: String,
}

impl DynamoDecks {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    fn key(deck: &str, filename: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("deck".to_string(), s(deck)), ("filename".to_string(), s(filename))])
    }

    async fn resolve_batch(&self, deck: &str, batch: Vec<String>) -> Result<Vec<DeckEntry>, StoreError> {
        let keys: Vec<_> = batch.iter().map(|f| Self::key(deck, f)).collect();
        // Consistent, as the page query: an instance remembers the ready records of what it finds
        // referenced (`servable`), which is safe only if "referenced" is true when read.
        let request = KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true).build().map_err(err)?;
        let items = batch_get(&self.client, &self.table, request).await?;
        Ok(items.into_iter().filter_map(entry).collect())
    }
}

/// A deck index item as an entry: the hash its filename resolves to; `None` when no note uses it.
fn entry(item: HashMap<String, AttributeValue>) -> Option<DeckEntry> {
    let f = deck_item::deck_file(&serde_dynamo::Item::from(item))?;
    Some(DeckEntry { filename: f.filename, hash: f.hash, notes: f.notes })
}

#[async_trait]
impl DeckIndex for DynamoDecks {
    async fn resolve(&self, deck: &str, filenames: &[String]) -> Result<HashMap<String, Sha256Hash>, StoreError> {
        let found = in_batches(filenames, |batch| self.resolve_batch(deck, batch)).await?;
        // An entry no note uses any more may linger until it is cleaned up; `entry` leaves it out.
        Ok(found.into_iter().map(|e: DeckEntry| (e.filename, e.hash)).collect())
    }

    async fn page(&self, deck: &str, after: Option<&str>, limit: usize) -> Result<DeckPage, StoreError> {
        let mut entries = Vec::with_capacity(limit);
        let mut start = after.map(|a| Self::key(deck, a));
        // A query returns at most 1 MB; keep going until the page is full or the deck ends.
        loop {
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#deck = :deck")
                // Consistent: see `resolve_batch`.
                .consistent_read(true)
                .filter_expression("#notes > :zero")
                .expression_attribute_names("#deck", "deck")
                .expression_attribute_names("#notes", "notes")
                .expression_attribute_values(":deck", s(deck))
                .expression_attribute_values(":zero", n(0))
                .limit(i32::try_from(limit - entries.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_err)?;
            entries.extend(resp.items.unwrap_or_default().into_iter().filter_map(entry));
            start = resp.last_evaluated_key;
            if start.is_none() || entries.len() >= limit {
                break;
            }
        }
        let next_after = start.is_some().then(|| entries.last().map(|e| e.filename.clone())).flatten();
        Ok(DeckPage { entries, next_after })
    }

    async fn file_notes(&self, deck: &str, filename: &str) -> Result<i64, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(deck, filename)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?
            .item;
        Ok(item.and_then(|i| deck_item::deck_file(&serde_dynamo::Item::from(i))).map_or(0, |f| f.notes))
    }

    async fn scan_all(&self) -> Result<Vec<DeckFile>, StoreError> {
        let mut items =
            self.client.scan().table_name(&self.table).consistent_read(true).into_paginator().items().send();
        let mut out = Vec::new();
        while let Some(item) = items.next().await {
            // Items no note uses (a count-down of an entry already gone, say) are left out.
            out.extend(deck_item::deck_file(&serde_dynamo::Item::from(item.map_err(sdk_err)?)));
        }
        Ok(out)
    }
}
