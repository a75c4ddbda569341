//! Lambda's DynamoDB event source mapping, for the local stack: read the tables' streams from
//! moto and hand batches to sync-postgres's handler code. As on AWS, a batch that reports a
//! failed record is delivered again from that record on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use shared::store::mirror::Mirror;
use shared::sync::{apply_stream, StreamTables};

/// A stream record as Lambda delivers it.
pub fn lambda_record(r: aws_sdk_dynamodbstreams::types::Record, stream_arn: &str) -> EventRecord {
    let mut out = EventRecord::default();
    out.event_id = r.event_id.unwrap_or_default();
    out.event_name = r.event_name.map(|n| n.as_str().to_string()).unwrap_or_default();
    out.event_source = Some("aws:dynamodb".into());
    out.event_source_arn = Some(stream_arn.to_string());
    out.aws_region = r.aws_region.unwrap_or_default();
    if let Some(d) = r.dynamodb {
        out.change.keys = d.keys.unwrap_or_default().into();
        out.change.new_image = d.new_image.unwrap_or_default().into();
        out.change.old_image = d.old_image.unwrap_or_default().into();
        out.change.sequence_number = d.sequence_number;
        out.change.size_bytes = d.size_bytes.unwrap_or_default();
    }
    out
}

/// A table's stream ARN and its first shard (moto keeps one shard per table).
async fn shard(
    ddb: &aws_sdk_dynamodb::Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    table: &str,
) -> anyhow::Result<(String, String)> {
    let arn = ddb
        .describe_table()
        .table_name(table)
        .send()
        .await?
        .table
        .and_then(|t| t.latest_stream_arn)
        .with_context(|| format!("table {table} has no stream"))?;
    let description = streams.describe_stream().stream_arn(&arn).send().await?;
    let shard = description
        .stream_description
        .and_then(|d| d.shards.and_then(|s| s.into_iter().next()))
        .and_then(|s| s.shard_id)
        .with_context(|| format!("the stream of {table} has no shard"))?;
    Ok((arn, shard))
}

/// Every record the table's stream holds now, oldest first.
pub async fn read_all(
    ddb: &aws_sdk_dynamodb::Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    table: &str,
) -> anyhow::Result<Vec<EventRecord>> {
    let (arn, shard_id) = shard(ddb, streams, table).await?;
    let mut iterator = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(&shard_id)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?
        .shard_iterator;
    let mut out = Vec::new();
    while let Some(it) = iterator {
        let page = streams.get_records().shard_iterator(it).limit(1000).send().await?;
        let records = page.records.unwrap_or_default();
        if records.is_empty() {
            break;
        }
        out.extend(records.into_iter().map(|r| lambda_record(r, &arn)));
        iterator = page.next_shard_iterator;
    }
    Ok(out)
}

/// Follow one table's stream for as long as the gateway runs.
pub async fn pump(
    mirror: Arc<dyn Mirror>,
    tables: StreamTables,
    ddb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
) {
    const BATCH: i32 = 100;
    let mut iterator: Option<String> = None;
    let mut arn = String::new();
    let mut pending: Vec<EventRecord> = Vec::new();
    loop {
        if iterator.is_none() {
            match shard(&ddb, &streams, &table).await {
                Ok((a, shard_id)) => {
                    arn = a;
                    iterator = streams
                        .get_shard_iterator()
                        .stream_arn(&arn)
                        .shard_id(shard_id)
                        .shard_iterator_type(ShardIteratorType::TrimHorizon)
                        .send()
                        .await
                        .ok()
                        .and_then(|r| r.shard_iterator);
                }
                Err(e) => tracing::warn!(error = %e, %table, "stream not readable yet"),
            }
            if iterator.is_none() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        if pending.is_empty() {
            match streams.get_records().set_shard_iterator(iterator.clone()).limit(BATCH).send().await {
                Ok(page) => {
                    pending = page.records.unwrap_or_default().into_iter().map(|r| lambda_record(r, &arn)).collect();
                    if page.next_shard_iterator.is_some() {
                        iterator = page.next_shard_iterator;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, %table, "reading the stream failed; starting over");
                    iterator = None;
                    continue;
                }
            }
        }
        if pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut event = Event::default();
        event.records = std::mem::take(&mut pending);
        let response = apply_stream(mirror.as_ref(), &tables, &event).await;
        if let Some(first) = response.batch_item_failures.first().and_then(|f| f.item_identifier.clone()) {
            pending =
                event.records.into_iter().skip_while(|r| r.change.sequence_number.as_ref() != Some(&first)).collect();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
