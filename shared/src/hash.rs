//! SHA-256 content hashes: the identity of every media file.

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 digest. Parsed only from 64 lowercase hex characters, the one spelling the API allows,
/// so that a hash has exactly one key in storage.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a hash is 64 lowercase hex characters")]
pub struct BadHash;

impl Sha256Hash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    pub fn parse(s: &str) -> Result<Self, BadHash> {
        let b = s.as_bytes();
        if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(BadHash);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadHash)?;
        Ok(Self(out))
    }

    pub fn to_hex(&self) -> String {
        String::from_utf8_lossy(&self.hex_digits()).into_owned()
    }

    /// Lowercase hex in a buffer: a download answer writes two per file, and `hex::encode`'s
    /// char iterator was a visible share of its CPU.
    fn hex_digits(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        // Cannot fail: 64 is exactly twice 32.
        let _ = hex::encode_to_slice(self.0, &mut out);
        out
    }

    /// The form S3 wants in `x-amz-checksum-sha256`.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex_digits()).unwrap_or_default())
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hash({})", self.to_hex())
    }
}

impl Serialize for Sha256Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.hex_digits()).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for Sha256Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sha256Hash::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental hashing for bodies that arrive in chunks.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }
    pub fn finish(self) -> Sha256Hash {
        Sha256Hash(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_digest() {
        let h = Sha256Hash::of(b"");
        assert_eq!(h.to_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(h.to_base64(), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    #[test]
    fn rejects_other_spellings() {
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(Sha256Hash::parse(upper), Err(BadHash));
        assert_eq!(Sha256Hash::parse("abc"), Err(BadHash));
        assert_eq!(Sha256Hash::parse(&"g".repeat(64)), Err(BadHash));
        assert_eq!(Sha256Hash::parse(&"a".repeat(65)), Err(BadHash));
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            let h = Sha256Hash::from_digest(bytes);
            prop_assert_eq!(Sha256Hash::parse(&h.to_hex()), Ok(h));
        }

        #[test]
        fn chunked_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..4096), cut in 0usize..4096) {
            let cut = cut.min(data.len());
            let mut hasher = Hasher::default();
            hasher.update(&data[..cut]);
            hasher.update(&data[cut..]);
            prop_assert_eq!(hasher.finish(), Sha256Hash::of(&data));
        }
    }
}
