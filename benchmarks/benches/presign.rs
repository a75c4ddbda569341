//! Pre-signing one URL: our signer against aws-sdk-s3's pre-signer, same request.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use criterion::{criterion_group, criterion_main, Criterion};
use shared::presign::{Credentials, Presigner, S3Endpoint, UploadSpec};

const KEY: &str = "uploads/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const CHECKSUM: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

fn bench(c: &mut Criterion) {
    let creds = Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("FQoGZXIvYXdzEXAMPLETOKEN".into()),
    };
    let ours = Presigner::new(S3Endpoint::aws("media-bucket", "us-east-1"), "us-east-1");
    let now = time::OffsetDateTime::now_utc();
    let spec =
        UploadSpec { key: KEY, content_length: 48213, sha256_b64: CHECKSUM, content_type: "application/octet-stream" };

    let mut group = c.benchmark_group("presign");
    group.bench_function("ours/put", |b| b.iter(|| ours.put(&creds, &spec, now, 900)));
    group.bench_function("ours/get", |b| b.iter(|| ours.get(&creds, KEY, now, 900)));

    // The SDK's pre-signer for the same PUT, configured as LOCAL-STACK.md prescribes.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sdk_creds = aws_credential_types::Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "bench",
    );
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(sdk_creds)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let presigning =
        PresigningConfig::builder().expires_in(Duration::from_secs(900)).start_time(SystemTime::now()).build().unwrap();
    group.bench_function("aws-sdk-s3/put", |b| {
        b.iter(|| {
            rt.block_on(async {
                client
                    .put_object()
                    .bucket("media-bucket")
                    .key(KEY)
                    .content_length(48213)
                    .checksum_sha256(CHECKSUM)
                    .presigned(presigning.clone())
                    .await
                    .unwrap()
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
