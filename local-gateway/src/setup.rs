//! Create the local resources that `template.yaml` declares for AWS, and migrate Postgres. Safe
//! to run again.

use anyhow::Context;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketVersioningStatus, Event, ExpirationStatus,
    FilterRule, FilterRuleName, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, NotificationConfiguration,
    NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter, VersioningConfiguration,
};
use shared::config::Config;
use shared::store::mirror::Mirror;
use shared::store::postgres::PgMirror;

pub async fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let queue_name = std::env::var("UPLOAD_QUEUE_NAME").unwrap_or_else(|_| "upload-events".into());
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);

    // Queue that S3 notifies about uploads.
    let queue_url = sqs.create_queue().queue_name(&queue_name).send().await?.queue_url.context("no queue url")?;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?;
    let queue_arn = attrs
        .attributes
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .context("no queue arn")?;

    // Bucket, lifecycle rule for abandoned uploads, and the notification on the upload prefix only.
    match s3.create_bucket().bucket(&config.bucket).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()) => {}
        Err(e) => return Err(e).context("create bucket"),
    }
    // Versioned, as template.yaml's bucket is: a deleted object stays restorable (`make restore`).
    s3.put_bucket_versioning()
        .bucket(&config.bucket)
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .context("bucket versioning")?;
    let prefix = config.keys.upload_prefix.clone();
    s3.put_bucket_lifecycle_configuration()
        .bucket(&config.bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(
                    LifecycleRule::builder()
                        .id("expire-abandoned-uploads")
                        .status(ExpirationStatus::Enabled)
                        .filter(LifecycleRuleFilter::builder().prefix(&prefix).build())
                        .expiration(LifecycleExpiration::builder().days(1).build())
                        .abort_incomplete_multipart_upload(
                            AbortIncompleteMultipartUpload::builder().days_after_initiation(1).build(),
                        )
                        .build()?,
                )
                .build()?,
        )
        .send()
        .await
        .context("lifecycle rule")?;
    s3.put_bucket_notification_configuration()
        .bucket(&config.bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .id("process-upload")
                        .queue_arn(&queue_arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(
                            NotificationConfigurationFilter::builder()
                                .key(
                                    S3KeyFilter::builder()
                                        .filter_rules(
                                            FilterRule::builder().name(FilterRuleName::Prefix).value(&prefix).build(),
                                        )
                                        .build(),
                                )
                                .build(),
                        )
                        .build()?,
                )
                .build(),
        )
        .send()
        .await
        .context("bucket notification")?;

    // As template.yaml declares them (tests/emulator/test_tables.py compares the two). The media
    // and deck-files tables' streams feed sync-postgres here as there (`streams`).
    let tables = [
        Table { name: &config.media_table, keys: &[("hash", KeyType::Hash)], ..Table::default() },
        Table {
            name: &config.deck_files_table,
            keys: &[("deck", KeyType::Hash), ("filename", KeyType::Range)],
            ..Table::default()
        },
        Table {
            name: &config.refs_table,
            keys: &[("note", KeyType::Hash), ("filename", KeyType::Range)],
            index: Some(("by_file", &[("deck_file", KeyType::Hash), ("note", KeyType::Range)])),
            ..Table::default()
        },
        Table {
            name: &config.quotas_table,
            keys: &[("pk", KeyType::Hash)],
            index: Some((
                shared::store::dynamo::PENDING_INDEX,
                &[("pending", KeyType::Hash), ("issued_at", KeyType::Range)],
            )),
            stream: false,
            ttl: Some("expires_at"),
        },
    ];
    for table in &tables {
        create_table(&ddb, table).await?;
    }

    PgMirror::from_env().await?.migrate().await.context("migrate Postgres")?;

    println!("UPLOAD_QUEUE_URL={queue_url}");
    Ok(())
}

/// A table: string keys, at most one global secondary index projecting every attribute (the
/// reference items' `by_file`, the quota holds' sparse `pending`), a stream of new and old images
/// unless `stream` is false, and a TTL attribute.
struct Table<'a> {
    name: &'a str,
    keys: &'a [(&'a str, KeyType)],
    index: Option<(&'a str, &'a [(&'a str, KeyType)])>,
    stream: bool,
    ttl: Option<&'a str>,
}

impl Default for Table<'_> {
    fn default() -> Self {
        Table { name: "", keys: &[], index: None, stream: true, ttl: None }
    }
}

async fn create_table(ddb: &aws_sdk_dynamodb::Client, table: &Table<'_>) -> anyhow::Result<()> {
    let key = |(n, k): &(&str, KeyType)| KeySchemaElement::builder().attribute_name(*n).key_type(k.clone()).build();
    let index_keys = table.index.map_or(&[][..], |(_, keys)| keys);
    let mut attrs: Vec<&str> = table.keys.iter().chain(index_keys).map(|(n, _)| *n).collect();
    attrs.sort_unstable();
    attrs.dedup();
    let mut req = ddb.create_table().table_name(table.name).billing_mode(BillingMode::PayPerRequest);
    for k in table.keys {
        req = req.key_schema(key(k)?);
    }
    for a in attrs {
        req = req.attribute_definitions(
            AttributeDefinition::builder().attribute_name(a).attribute_type(ScalarAttributeType::S).build()?,
        );
    }
    if let Some((index, keys)) = table.index {
        let mut gsi = GlobalSecondaryIndex::builder()
            .index_name(index)
            .projection(Projection::builder().projection_type(ProjectionType::All).build());
        for k in keys {
            gsi = gsi.key_schema(key(k)?);
        }
        req = req.global_secondary_indexes(gsi.build()?);
    }
    if table.stream {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(e).with_context(|| format!("create table {}", table.name)),
    }
    if let Some(attribute) = table.ttl {
        let now = ddb.describe_time_to_live().table_name(table.name).send().await?.time_to_live_description;
        // Asking again once it is on is an error, so only when it is not (setup runs again).
        if now.and_then(|d| d.attribute_name).as_deref() != Some(attribute) {
            let spec = TimeToLiveSpecification::builder().attribute_name(attribute).enabled(true).build()?;
            ddb.update_time_to_live()
                .table_name(table.name)
                .time_to_live_specification(spec)
                .send()
                .await
                .with_context(|| format!("TTL of table {}", table.name))?;
        }
    }
    Ok(())
}
