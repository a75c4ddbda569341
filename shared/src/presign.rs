//! Pre-signed S3 URLs (SigV4, signature in the query string).
//!
//! Written here rather than taken from aws-sdk-s3's presigner for two reasons: a deck download
//! signs thousands of URLs per request, and the SDK's presigner costs 60–100 µs per URL where this
//! one, which caches the daily signing key as a keyed HMAC, costs a few; and the SDK has had
//! checksum bugs with pre-signed PUTs (aws-sdk-rust#1103, #1240, #1253). Tests check that its
//! signatures equal aws-sigv4's for the same request, and that LocalStack S3 with signature
//! validation accepts them.

use std::fmt::Write as _;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// RFC 3986 unreserved characters stay; everything else is percent-encoded (SigV4's rule).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// Same for object keys, which also keep their slashes.
pub(crate) const PATH: &AsciiSet = &QUERY.remove(b'/');

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Where signing credentials come from; on Lambda they rotate, so ask per request.
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync {
    async fn credentials(&self) -> Result<Credentials, CredentialsError>;
}

/// Fixed credentials (tests, benchmarks).
#[cfg(any(test, feature = "test-util"))]
pub struct StaticCredentials(pub Credentials);

#[cfg(any(test, feature = "test-util"))]
#[async_trait::async_trait]
impl CredentialSource for StaticCredentials {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Ok(self.0.clone())
    }
}

/// No credentials to sign with. Like a storage failure, transient to the caller (503).
#[derive(Debug, thiserror::Error)]
#[error("credentials: {0}")]
pub struct CredentialsError(pub String);

/// Where URLs point: the bucket's virtual host on AWS, or path-style on an emulator.
#[derive(Debug, Clone)]
pub struct S3Endpoint {
    /// `https://bucket.s3.region.amazonaws.com` or `http://127.0.0.1:4566`
    origin: String,
    host: String,
    /// `""` for virtual-hosted style, `/bucket` for path style.
    path_prefix: String,
}

impl S3Endpoint {
    pub fn aws(bucket: &str, region: &str) -> Self {
        let host = format!("{bucket}.s3.{region}.amazonaws.com");
        Self { origin: format!("https://{host}"), host, path_prefix: String::new() }
    }

    /// Path-style addressing at a custom endpoint such as `http://127.0.0.1:4566`.
    pub fn path_style(endpoint: &str, bucket: &str) -> Result<Self, String> {
        let endpoint = endpoint.trim_end_matches('/');
        let (_, rest) = endpoint.split_once("://").ok_or_else(|| format!("endpoint {endpoint:?} has no scheme"))?;
        let (host, base) = rest.split_once('/').map_or((rest, ""), |(h, b)| (h, b));
        let base = if base.is_empty() { String::new() } else { format!("/{base}") };
        Ok(Self {
            origin: endpoint[..endpoint.len() - base.len()].to_string(),
            host: host.to_string(),
            path_prefix: format!("{base}/{}", utf8_percent_encode(bucket, PATH)),
        })
    }
}

/// The one body a pre-signed PUT admits.
#[derive(Debug, Clone, Copy)]
pub struct UploadSpec<'a> {
    pub key: &'a str,
    pub content_length: u64,
    /// SHA-256 of the body, base64 (S3's `x-amz-checksum-sha256`).
    pub sha256_b64: &'a str,
    pub content_type: &'a str,
}

/// A URL and the headers that must accompany it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub expires_at: OffsetDateTime,
}

struct SigningKey {
    date: [u8; 8],
    access_key_id: String,
    secret: String,
    /// HMAC keyed with the day's signing key; cloned per signature.
    mac: HmacSha256,
}

pub struct Presigner {
    endpoint: S3Endpoint,
    region: String,
    key: Mutex<Option<SigningKey>>,
}

impl Presigner {
    pub fn new(endpoint: S3Endpoint, region: impl Into<String>) -> Self {
        Self { endpoint, region: region.into(), key: Mutex::new(None) }
    }

    /// The origin the signed URLs point at (`https://bucket.s3.region.amazonaws.com`, or the
    /// emulator's), for the maintainer page's Content-Security-Policy.
    pub fn origin(&self) -> &str {
        &self.endpoint.origin
    }

    /// A PUT that S3 accepts only with exactly the body `upload` describes.
    pub fn put(
        &self,
        creds: &Credentials,
        upload: &UploadSpec<'_>,
        now: OffsetDateTime,
        expires_secs: u32,
    ) -> Presigned {
        let UploadSpec { key, content_length, sha256_b64, content_type } = *upload;
        let len = content_length.to_string();
        // Sorted by name, as the canonical request wants them.
        let headers = [
            ("content-length", len.as_str()),
            ("content-type", content_type),
            ("host", self.endpoint.host.as_str()),
            ("x-amz-checksum-sha256", sha256_b64),
        ];
        let url = self.sign(creds, "PUT", key, &headers, now, expires_secs);
        Presigned {
            url,
            headers: vec![
                ("content-length", len.clone()),
                ("content-type", content_type.to_string()),
                ("x-amz-checksum-sha256", sha256_b64.to_string()),
            ],
            expires_at: now + time::Duration::seconds(i64::from(expires_secs)),
        }
    }

    pub fn get(&self, creds: &Credentials, key: &str, now: OffsetDateTime, expires_secs: u32) -> Presigned {
        let headers = [("host", self.endpoint.host.as_str())];
        Presigned {
            url: self.sign(creds, "GET", key, &headers, now, expires_secs),
            headers: Vec::new(),
            expires_at: now + time::Duration::seconds(i64::from(expires_secs)),
        }
    }

    fn sign(
        &self,
        creds: &Credentials,
        method: &str,
        key: &str,
        headers: &[(&str, &str)],
        now: OffsetDateTime,
        expires_secs: u32,
    ) -> String {
        let now = now.to_offset(time::UtcOffset::UTC);
        let mut amz_date = String::with_capacity(16);
        let _ = write!(
            amz_date,
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let date = &amz_date[..8];
        let scope = format!("{date}/{}/s3/aws4_request", self.region);

        let path = format!("{}/{}", self.endpoint.path_prefix, utf8_percent_encode(key, PATH));
        let mut signed_headers = String::new();
        for (i, (name, _)) in headers.iter().enumerate() {
            if i > 0 {
                signed_headers.push(';');
            }
            signed_headers.push_str(name);
        }
        // Parameters in canonical (sorted) order.
        let mut query = String::with_capacity(512);
        let _ = write!(
            query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}%2F{}&X-Amz-Date={amz_date}&X-Amz-Expires={expires_secs}",
            utf8_percent_encode(&creds.access_key_id, QUERY),
            utf8_percent_encode(&scope, QUERY),
        );
        if let Some(token) = &creds.session_token {
            let _ = write!(query, "&X-Amz-Security-Token={}", utf8_percent_encode(token, QUERY));
        }
        let _ = write!(query, "&X-Amz-SignedHeaders={}", utf8_percent_encode(&signed_headers, QUERY));

        let mut canonical = String::with_capacity(1024);
        let _ = write!(canonical, "{method}\n{path}\n{query}\n");
        for (name, value) in headers {
            let _ = writeln!(canonical, "{name}:{}", value.trim());
        }
        let _ = write!(canonical, "\n{signed_headers}\nUNSIGNED-PAYLOAD");

        let string_to_sign =
            format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
        let mut mac = self.signing_mac(creds, date);
        mac.update(string_to_sign.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());

        format!("{}{path}?{query}&X-Amz-Signature={signature}", self.endpoint.origin)
    }

    /// The keyed HMAC for today's signing key, derived again only when the day or the
    /// credentials change (they rotate on Lambda).
    fn signing_mac(&self, creds: &Credentials, date: &str) -> HmacSha256 {
        let mut cache = self.key.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(k) = cache.as_ref() {
            if k.date == date.as_bytes()
                && k.access_key_id == creds.access_key_id
                && k.secret == creds.secret_access_key
            {
                return k.mac.clone();
            }
        }
        let hmac = |key: &[u8], data: &[u8]| {
            let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
            m.update(data);
            m.finalize().into_bytes()
        };
        let k_date = hmac(format!("AWS4{}", creds.secret_access_key).as_bytes(), date.as_bytes());
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, b"s3");
        let k_signing = hmac(&k_service, b"aws4_request");
        let mac = HmacSha256::new_from_slice(&k_signing).expect("HMAC takes any key length");
        let mut d = [0u8; 8];
        d.copy_from_slice(&date.as_bytes()[..8]);
        *cache = Some(SigningKey {
            date: d,
            access_key_id: creds.access_key_id.clone(),
            secret: creds.secret_access_key.clone(),
            mac: mac.clone(),
        });
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(Into::into),
        }
    }

    /// The signature aws-sigv4 computes for the same request.
    fn reference_signature(
        creds: &Credentials,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        now: OffsetDateTime,
        expires: u64,
    ) -> String {
        use aws_sigv4::http_request::{
            sign, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
            UriPathNormalizationMode,
        };
        let identity = aws_credential_types::Credentials::new(
            &creds.access_key_id,
            &creds.secret_access_key,
            creds.session_token.clone(),
            None,
            "test",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(UNIX_EPOCH + Duration::from_secs(now.unix_timestamp() as u64))
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let request =
            SignableRequest::new(method, url, headers.iter().copied(), SignableBody::UnsignedPayload).unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        instructions.params().iter().find(|(k, _)| *k == "X-Amz-Signature").map(|(_, v)| v.to_string()).unwrap()
    }

    fn signature_of(url: &str) -> &str {
        url.rsplit_once("X-Amz-Signature=").unwrap().1
    }

    #[test]
    fn matches_aws_sigv4_for_put_and_get() {
        let now = OffsetDateTime::from_unix_timestamp(1_763_768_400).unwrap();
        for token in [None, Some("FQoGZXIvYXdz/token+with=odd/chars")] {
            let c = creds(token);
            for endpoint in [
                S3Endpoint::aws("media-bucket", "us-east-1"),
                S3Endpoint::path_style("http://127.0.0.1:4566", "media-bucket").unwrap(),
            ] {
                let p = Presigner::new(endpoint.clone(), "us-east-1");
                let key = "uploads/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
                let spec = UploadSpec {
                    key,
                    content_length: 48213,
                    sha256_b64: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                    content_type: "application/octet-stream",
                };
                let put = p.put(&c, &spec, now, 900);
                let bare = format!("{}{}/{key}", endpoint.origin, endpoint.path_prefix);
                let headers = [
                    ("content-length", "48213"),
                    ("content-type", "application/octet-stream"),
                    ("host", endpoint.host.as_str()),
                    ("x-amz-checksum-sha256", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
                ];
                assert_eq!(signature_of(&put.url), reference_signature(&c, "PUT", &bare, &headers, now, 900));
                assert!(put
                    .url
                    .contains("X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost%3Bx-amz-checksum-sha256"));

                let get = p.get(&c, "media/a b+c", now, 900);
                let bare = format!("{}{}/media/a%20b%2Bc", endpoint.origin, endpoint.path_prefix);
                let headers = [("host", endpoint.host.as_str())];
                assert_eq!(signature_of(&get.url), reference_signature(&c, "GET", &bare, &headers, now, 900));
                assert_eq!(get.expires_at, now + time::Duration::seconds(900));
            }
        }
    }

    #[test]
    fn rotated_credentials_change_the_key() {
        let now = OffsetDateTime::from_unix_timestamp(1_763_768_400).unwrap();
        let p = Presigner::new(S3Endpoint::aws("b", "us-east-1"), "us-east-1");
        let a = p.get(&creds(None), "k", now, 60);
        let mut other = creds(None);
        other.secret_access_key.push('x');
        let b = p.get(&other, "k", now, 60);
        assert_ne!(signature_of(&a.url), signature_of(&b.url));
        assert_eq!(p.get(&creds(None), "k", now, 60), a);
    }
}
