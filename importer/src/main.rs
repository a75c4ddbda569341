//! `import-legacy`: bring AnkiCollab's existing media into the media server (see `lib.rs`).
//!
//!     import-legacy [--parallel N] [--report FILE.jsonl]
//!
//! Source (AnkiCollab today): `SOURCE_DATABASE_URL` (its Postgres), `SOURCE_BUCKET`, and
//! optionally `SOURCE_ENDPOINT` (an S3-compatible service that is not AWS), `SOURCE_REGION`,
//! `SOURCE_PROFILE` or `SOURCE_ACCESS_KEY_ID`/`SOURCE_SECRET_ACCESS_KEY` (else the usual AWS
//! variables). Target (the media stack): the functions' own settings (`BUCKET`, `MEDIA_TABLE`,
//! `DECK_FILES_TABLE`, `REFS_TABLE`, `QUOTAS_TABLE`, `JWT_SECRET` or `JWT_SECRET_ARN`) and
//! `MEDIA_API_URL`; `make import-legacy` fills them from the local stack unless told otherwise.
//! Exit status 1 when anything referenced could not be imported, 2 when the run could not go on.

use std::path::PathBuf;
use std::sync::Arc;

use ankicollab_media_backend::{MediaSync, ReferencesClient, TokenIssuer};
use anyhow::Context;
use legacy_import::progress::Progress;
use legacy_import::report::Report;
use legacy_import::source::Bucket;
use legacy_import::{Options, Target};
use tokio_postgres::NoTls;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.context("connecting to SOURCE_DATABASE_URL")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "the database connection ended");
        }
    });
    Ok(client)
}

async fn source_bucket() -> anyhow::Result<Bucket> {
    let name = var("SOURCE_BUCKET").context("SOURCE_BUCKET is required")?;
    // Reads of whole objects (up to the largest file) from wherever AnkiCollab keeps them.
    let bounds = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(std::time::Duration::from_secs(120))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(bounds);
    if let Some(profile) = var("SOURCE_PROFILE") {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = var("SOURCE_REGION") {
        loader = loader.region(aws_config::Region::new(region));
    }
    if let (Some(id), Some(secret)) = (var("SOURCE_ACCESS_KEY_ID"), var("SOURCE_SECRET_ACCESS_KEY")) {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(id, secret, None, None, "source"));
    }
    let sdk = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&sdk);
    if let Some(endpoint) = var("SOURCE_ENDPOINT") {
        conf = conf.endpoint_url(endpoint).force_path_style(true);
    }
    Ok(Bucket { client: aws_sdk_s3::Client::from_conf(conf.build()), name })
}

struct Args {
    parallel: usize,
    report: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut a = Args {
        parallel: var("IMPORT_PARALLEL").map(|v| v.parse()).transpose().context("IMPORT_PARALLEL")?.unwrap_or(8),
        report: PathBuf::from(format!("import-legacy-{stamp}.jsonl")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--parallel" => a.parallel = it.next().context("--parallel N")?.parse().context("--parallel N")?,
            "--report" => a.report = it.next().context("--report FILE")?.into(),
            "-h" | "--help" => {
                println!("import-legacy [--parallel N] [--report FILE.jsonl]   (see make import-legacy)");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok(a)
}

async fn main_() -> anyhow::Result<bool> {
    let args = args()?;
    let url = var("SOURCE_DATABASE_URL").context("SOURCE_DATABASE_URL is required")?;
    let reader = connect(&url).await?;
    let mut writer = connect(&url).await?;
    legacy_import::prepare(&writer).await.context("creating the ledger")?;
    let bucket = source_bucket().await?;

    let app = shared::App::from_env().await.context("the media stack's settings")?;
    let blobs = shared::app::object_store(&app.config).await;
    let secret = app
        .config
        .jwt_secret
        .as_ref()
        .map(|s| s.expose().to_owned())
        .context("JWT_SECRET (or JWT_SECRET_ARN) is required")?;
    let api = var("MEDIA_API_URL").or_else(|| var("API_URL")).context("MEDIA_API_URL is required")?;
    let issuer = TokenIssuer::new(&secret)?.names(&app.config.token_policy.issuer, &app.config.token_policy.audience);
    let target = Target { app, blobs, sync: MediaSync::new(ReferencesClient::new(api, issuer)) };

    let mut report = Report::create(&args.report).with_context(|| format!("creating {}", args.report.display()))?;
    eprintln!("import-legacy: report in {}", report.path().display());
    let progress = Progress::new();
    let drawing = progress.spawn();
    let options = Options { parallel: args.parallel, ..Options::default() };
    let result =
        legacy_import::run(&reader, &mut writer, Arc::new(bucket), Arc::new(target), options, &mut report, &progress)
            .await;
    progress.finish();
    drawing.abort();
    let summary = result?;
    println!("{}", summary.line());
    Ok(!summary.incomplete())
}

#[tokio::main]
async fn main() {
    shared::telemetry::init();
    let code = match main_().await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("import-legacy: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
