//! Audio: how long a file plays, read from its container (`duration`), and uncompressed audio
//! stored as MP3 (`mp3`).

mod duration;
mod mp3;

pub use duration::{duration_ms, Corrupt};
pub use mp3::{to_mp3, Encoded};
