//! Throughput of the SSIM that guards `CONVERSION_EFFORT=smallest` (`shared::convert::ssim`), on a
//! 3 Mpx RGB picture against a slightly changed copy.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shared::convert::{ssim, Picture};

fn bench(c: &mut Criterion) {
    let (width, height) = (2048usize, 1536usize);
    let a: Vec<u8> =
        (0..width * height * 3).map(|i| ((i / 3 % width) / 8 + (i / 3 / width) / 6 + i % 3 * 40) as u8).collect();
    let b: Vec<u8> = a.iter().enumerate().map(|(i, v)| v.wrapping_add((i % 7) as u8)).collect();
    let (pa, pb) =
        (Picture { data: &a, width, height, alpha: false }, Picture { data: &b, width, height, alpha: false });
    let mut group = c.benchmark_group("ssim");
    group.throughput(Throughput::Elements((width * height) as u64));
    group.bench_function("3.1 Mpx RGB", |bench| bench.iter(|| ssim(&pa, &pb)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
