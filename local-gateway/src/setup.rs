//! Create the local resources that `template.yaml` declares for AWS, and migrate Postgres. Safe
//! to run again.

use anyhow::Context;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
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

    // The two mirrored tables stream their changes to sync-postgres, as in the template.
    create_table(&ddb, &config.media_table, &[("hash", KeyType::Hash)], true).await?;
    create_table(&ddb, &config.deck_files_table, &[("deck", KeyType::Hash), ("filename", KeyType::Range)], true)
        .await?;
    create_indexed_table(
        &ddb,
        &config.refs_table,
        &[("note", KeyType::Hash), ("filename", KeyType::Range)],
        "by_file",
        &[("deck_file", KeyType::Hash), ("note", KeyType::Range)],
    )
    .await?;
    create_indexed_table(
        &ddb,
        &config.quotas_table,
        &[("pk", KeyType::Hash)],
        shared::store::dynamo::PENDING_INDEX,
        &[("pending", KeyType::Hash), ("issued_at", KeyType::Range)],
    )
    .await?;

    PgMirror::from_env().await?.migrate().await.context("migrate Postgres")?;

    println!("UPLOAD_QUEUE_URL={queue_url}");
    Ok(())
}

/// A table with one global secondary index projecting every attribute: the reference items'
/// `by_file` index (the maintainer API finds a file's notes there) and the quota holds' sparse
/// `pending` index.
async fn create_indexed_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    keys: &[(&str, KeyType)],
    index: &str,
    index_keys: &[(&str, KeyType)],
) -> anyhow::Result<()> {
    let key = |(n, k): &(&str, KeyType)| KeySchemaElement::builder().attribute_name(*n).key_type(k.clone()).build();
    let mut attrs: Vec<&str> = keys.iter().chain(index_keys).map(|(n, _)| *n).collect();
    attrs.sort_unstable();
    attrs.dedup();
    let mut gsi = GlobalSecondaryIndex::builder()
        .index_name(index)
        .projection(Projection::builder().projection_type(ProjectionType::All).build());
    for k in index_keys {
        gsi = gsi.key_schema(key(k)?);
    }
    let mut req = ddb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .global_secondary_indexes(gsi.build()?);
    for k in keys {
        req = req.key_schema(key(k)?);
    }
    for a in attrs {
        req = req.attribute_definitions(
            AttributeDefinition::builder().attribute_name(a).attribute_type(ScalarAttributeType::S).build()?,
        );
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create table {name}")),
    }
}

/// A table keyed by `keys`; `stream`: with a stream of new and old images (the mirrored tables).
async fn create_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    keys: &[(&str, KeyType)],
    stream: bool,
) -> anyhow::Result<()> {
    let mut req = ddb.create_table().table_name(name).billing_mode(BillingMode::PayPerRequest);
    if stream {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()?,
        );
    }
    for (attr, kind) in keys {
        req = req
            .attribute_definitions(
                AttributeDefinition::builder().attribute_name(*attr).attribute_type(ScalarAttributeType::S).build()?,
            )
            .key_schema(KeySchemaElement::builder().attribute_name(*attr).key_type(kind.clone()).build()?);
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create table {name}")),
    }
}
