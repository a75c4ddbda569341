//! Hash a file the way process-upload hashes a body (incrementally, in chunks) and print the
//! digest like sha256sum does. Used by compare-hashing.py.

use std::io::Read;

fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).expect("usage: sha256-file PATH");
    let mut file = std::fs::File::open(&path)?;
    let mut hasher = shared::hash::Hasher::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    println!("{}  {path}", hasher.finish());
    Ok(())
}
