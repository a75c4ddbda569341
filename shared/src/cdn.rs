//! Downloads through CloudFront: URLs signed with one custom policy per answer.
//!
//! A pre-signed S3 GET carries a signature of its own. A CloudFront custom policy may name a
//! wildcard resource, so one RSA signature covers every URL of an answer: the policy, its
//! signature and the key pair id are the same query string on each URL, and only the path
//! differs. The distribution reads nothing but `media/` and `thumbs/` (the bucket policy lets it
//! read only those), and each answer's policy names the narrowest prefix its URLs need.
//!
//! The policy is signed with RSA PKCS #1 v1.5 over SHA-256 (`Hash-Algorithm=SHA256`), which
//! CloudFront accepts beside the older SHA-1; the key is the private half of a public key in the
//! distribution's trusted key group.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use base64::Engine;
use percent_encoding::utf8_percent_encode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    #[error("the CloudFront signing key is not an RSA private key in PEM (PKCS #1 or PKCS #8): {0}")]
    Key(String),
    #[error("CDN_URL must be a scheme and host such as https://d111111abcdef8.cloudfront.net, not {0:?}")]
    Url(String),
    #[error("signing the CloudFront policy failed")]
    Sign,
    #[error("a grant names a key prefix such as media/, never the whole distribution: {0:?}")]
    Prefix(String),
}

pub struct CdnSigner {
    /// `https://d111111abcdef8.cloudfront.net` (or the local emulator's `http://127.0.0.1:port`).
    base: String,
    key_pair_id: String,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for CdnSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdnSigner").field("base", &self.base).field("key_pair_id", &self.key_pair_id).finish()
    }
}

/// The query string one answer's URLs share, and the resource it grants.
#[derive(Debug, Clone)]
pub struct Grant {
    query: String,
    /// The policy's resource, e.g. `https://d111111abcdef8.cloudfront.net/media/*`.
    pub resource: String,
}

impl CdnSigner {
    pub fn new(base_url: &str, key_pair_id: &str, private_key_pem: &str) -> Result<Self, CdnError> {
        let host = base_url.strip_prefix("https://").or_else(|| base_url.strip_prefix("http://"));
        let valid = host.is_some_and(|h| {
            !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
        });
        if !valid {
            return Err(CdnError::Url(base_url.into()));
        }
        let der =
            PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes()).map_err(|e| CdnError::Key(e.to_string()))?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err(CdnError::Key("not an RSA key".into())),
        }
        .map_err(|e| CdnError::Key(e.to_string()))?;
        Ok(Self { base: base_url.into(), key_pair_id: key_pair_id.into(), key, rng: SystemRandom::new() })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// One policy and signature for every URL under `prefix` (`media/`, `thumbs/`) that expires
    /// at `expires` (Unix seconds). A prefix is a folder: never empty (the whole distribution).
    pub fn grant(&self, prefix: &str, expires: i64) -> Result<Grant, CdnError> {
        let folder = prefix.strip_suffix('/').filter(|p| !p.is_empty());
        if folder.is_none_or(|p| !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')) {
            return Err(CdnError::Prefix(prefix.into()));
        }
        let resource = format!("{}/{prefix}*", self.base);
        // The policy is JSON CloudFront parses; its resource holds only the host and a key
        // prefix, which need no escaping.
        let policy = format!(
            r#"{{"Statement":[{{"Resource":"{resource}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key.sign(&RSA_PKCS1_SHA256, &self.rng, policy.as_bytes(), &mut signature).map_err(|_| CdnError::Sign)?;
        let query = format!(
            "Policy={}&Signature={}&Key-Pair-Id={}&Hash-Algorithm=SHA256",
            url_safe_base64(policy.as_bytes()),
            url_safe_base64(&signature),
            self.key_pair_id
        );
        Ok(Grant { query, resource })
    }

    /// The URL of `key` (an object key under the grant's prefix) under `grant`.
    pub fn url(&self, grant: &Grant, key: &str) -> String {
        format!("{}/{}?{}", self.base, utf8_percent_encode(key, crate::presign::PATH), grant.query)
    }
}

/// Base64 as CloudFront wants it in a query string: `+` `=` `/` become `-` `_` `~`.
fn url_safe_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2048-bit test key, made for these tests only.
    const TEST_KEY: &str = include_str!("../testdata/cdn-test-key.pem");

    fn decode(s: &str) -> Vec<u8> {
        let standard: String = s
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '=',
                '~' => '/',
                c => c,
            })
            .collect();
        base64::engine::general_purpose::STANDARD.decode(standard).unwrap()
    }

    fn param<'a>(url: &'a str, name: &str) -> &'a str {
        let query = url.split_once('?').unwrap().1;
        query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap()
    }

    #[test]
    fn one_signature_serves_every_url_of_a_grant() {
        let signer = CdnSigner::new("https://d111111abcdef8.cloudfront.net", "K2JCJMDEHXQW5F", TEST_KEY).unwrap();
        let grant = signer.grant("media/", 1_700_000_000).unwrap();
        let a = signer.url(&grant, "media/aaaa");
        let b = signer.url(&grant, "media/bbbb");
        assert!(a.starts_with("https://d111111abcdef8.cloudfront.net/media/aaaa?Policy="));
        assert_eq!(a.split_once('?').unwrap().1, b.split_once('?').unwrap().1);
        let policy = String::from_utf8(decode(param(&a, "Policy"))).unwrap();
        assert_eq!(
            policy,
            r#"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/media/*","Condition":{"DateLessThan":{"AWS:EpochTime":1700000000}}}]}"#
        );
        assert_eq!(param(&a, "Key-Pair-Id"), "K2JCJMDEHXQW5F");
        assert_eq!(param(&a, "Hash-Algorithm"), "SHA256");
        let signature = decode(param(&a, "Signature"));
        assert_eq!(signature.len(), 256, "a 2048-bit RSA signature");
        // The key's public half accepts it (an independent check is tests/emulator/test_cdn.py's).
        use aws_lc_rs::signature::{KeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, signer.key.public_key().as_ref().to_vec());
        assert!(public.verify(policy.as_bytes(), &signature).is_ok());
        assert!(public.verify(policy.replace("1700000000", "1700000001").as_bytes(), &signature).is_err());
        for name in ["Policy", "Signature"] {
            assert!(!param(&a, name).contains(['+', '=', '/']), "{name} is CloudFront's URL-safe base64");
        }
    }

    #[test]
    fn a_grant_is_for_one_folder_never_the_whole_distribution() {
        let signer = CdnSigner::new("https://d1.cloudfront.net", "K", TEST_KEY).unwrap();
        assert_eq!(signer.grant("thumbs/", 1).unwrap().resource, "https://d1.cloudfront.net/thumbs/*");
        for bad in ["", "/", "media", "*", "media/*", "a/b/", "../"] {
            assert!(matches!(signer.grant(bad, 1), Err(CdnError::Prefix(_))), "{bad:?}");
        }
    }

    #[test]
    fn bad_keys_and_domains_are_refused() {
        assert!(matches!(CdnSigner::new("https://d1.cloudfront.net", "K", "not a key"), Err(CdnError::Key(_))));
        for url in ["https://d1.cloudfront.net/", "d1.cloudfront.net", "https://", "ftp://d1", "https://d1/media"] {
            assert!(matches!(CdnSigner::new(url, "K", TEST_KEY), Err(CdnError::Url(_))), "{url}");
        }
        assert!(CdnSigner::new("http://127.0.0.1:4599", "K", TEST_KEY).is_ok());
    }
}
