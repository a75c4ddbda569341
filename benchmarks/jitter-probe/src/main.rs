//! Time of aws-lc's first random bytes in a fresh process (the DRBG's seeding: with jitter entropy
//! built in, CPU-timing jitter samples are collected here), then of the next ones. In our functions
//! the first random bytes are drawn by the first TLS handshake, i.e. the first storage call.
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use std::time::Instant;

fn main() {
    let rng = SystemRandom::new();
    let mut buf = [0u8; 32];
    let t0 = Instant::now();
    rng.fill(&mut buf).expect("first random bytes");
    let first = t0.elapsed();
    let t1 = Instant::now();
    rng.fill(&mut buf).expect("second random bytes");
    let second = t1.elapsed();
    // A new thread gets its own DRBG seeded from the process's.
    let third = std::thread::spawn(move || {
        let t = Instant::now();
        rng.fill(&mut buf).expect("random bytes on a new thread");
        t.elapsed()
    })
    .join()
    .unwrap();
    println!(
        "{{\"first_us\": {:.1}, \"second_us\": {:.1}, \"new_thread_us\": {:.1}}}",
        first.as_secs_f64() * 1e6,
        second.as_secs_f64() * 1e6,
        third.as_secs_f64() * 1e6
    );
}
