//! SHA-256 throughput of the code process-upload uses (`sha2`, which picks the CPU's SHA
//! extensions at run time). `benchmarks/compare-hashing.sh` puts sha256sum and openssl beside it.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut group = c.benchmark_group("sha256");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("shared::hash 16 MiB", |b| b.iter(|| shared::hash::Sha256Hash::of(&data)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
