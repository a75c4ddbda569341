//! Handing out URLs for a whole 10,000-file deck: handler CPU time with storage latency taken out
//! (in-memory stores), and the number of requests a client needs; with pre-signed S3 GETs (one
//! signature per URL) and with CloudFront URLs (one signature per answer), side by side.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use shared::auth::Principal;
use shared::cdn::CdnSigner;
use shared::downloads::{presign_downloads, DownloadRequest};
use shared::hash::Sha256Hash;
use shared::model::StoredMedia;
use shared::references::set_note;
use shared::App;

const FILES: usize = 10_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut app = App::in_memory("k");
    let token = shared::auth::mint(b"k", "u", "download", &[], 3600);
    let who = app.tokens.as_ref().unwrap().verify(Some(&format!("Bearer {token}"))).unwrap();
    rt.block_on(async {
        for note in 0..FILES / 100 {
            let mut set = shared::references::NoteSet::new();
            for i in note * 100..(note + 1) * 100 {
                let hash = Sha256Hash::of(&(i as u64).to_le_bytes());
                app.media.ensure_record(&hash, "t").await.unwrap();
                let stored = StoredMedia {
                    stored_key: app.config.keys.media(&hash),
                    thumb_key: None,
                    content_type: "image/webp".into(),
                    size: 1000,
                    stored_size: 500,
                    stored_hash: hash,
                    width: Some(64),
                    height: Some(64),
                    duration_ms: None,
                };
                app.media.mark_ready(&hash, &stored, "t").await.unwrap();
                set.insert(format!("file-{i:05}.png"), hash);
            }
            set_note(&*app.refs, &*app.media, "big", &format!("n{note}"), &move |_| set.clone(), "t").await.unwrap();
        }
    });

    let (requests, urls) = rt.block_on(whole_deck(&app, &who));
    assert_eq!(urls, FILES);
    println!("whole deck of {FILES} files: {requests} requests (page size {})", app.config.download_page_size);

    c.bench_function("downloads/whole 10k-file deck (all pages)", |b| b.iter(|| rt.block_on(whole_deck(&app, &who))));

    // The same answers with the CloudFront distribution on: one RSA-2048 signature per answer.
    let signer = CdnSigner::new("https://d111111abcdef8.cloudfront.net", "K2JCJMDEHXQW5F", TEST_KEY).unwrap();
    c.bench_function("downloads/one CloudFront policy signature", |b| {
        b.iter(|| signer.grant("media/", 1_800_000_000).unwrap())
    });
    app.cdn = Some(signer);
    let (requests, urls) = rt.block_on(whole_deck(&app, &who));
    assert_eq!(urls, FILES);
    println!("with CloudFront: {requests} requests, {urls} URLs");
    c.bench_function("downloads/whole 10k-file deck via CloudFront (all pages)", |b| {
        b.iter(|| rt.block_on(whole_deck(&app, &who)))
    });
}

/// Every page of the deck, as a client asks for them: (requests, URLs).
async fn whole_deck(app: &App, who: &Principal) -> (usize, usize) {
    let mut cursor = None;
    let mut requests = 0;
    let mut urls = 0;
    loop {
        let req = DownloadRequest { deck: "big".into(), filenames: None, cursor };
        let page = presign_downloads(&app.downloads(), who, req, time::OffsetDateTime::now_utc()).await.unwrap();
        requests += 1;
        urls += page.files.len();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return (requests, urls),
        }
    }
}

/// The tests' key; any RSA-2048 key signs as fast.
const TEST_KEY: &str = include_str!("../../shared/testdata/cdn-test-key.pem");

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
