//! S3 adapter.

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::*;

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new("s3", e)
}

fn sdk_err<E: ProvideErrorMetadata + std::fmt::Debug>(e: aws_sdk_s3::error::SdkError<E>) -> StoreError {
    let detail = e.as_service_error().and_then(|s| s.message().map(str::to_owned));
    err(detail.unwrap_or_else(|| format!("{e:?}")))
}

#[derive(Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into() }
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn read(&self, key: &str, max: u64) -> Result<Option<ReadBlob>, StoreError> {
        let resp = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(r) => r,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(sdk_err(e)),
        };
        let declared = resp.content_length.unwrap_or(0).max(0) as u64;
        if declared > max {
            return Ok(Some(ReadBlob::TooLarge(declared)));
        }
        // Never trust the declared length alone: stop reading past the cap.
        let mut body = resp.body;
        let mut out = Vec::with_capacity(declared as usize);
        while let Some(chunk) = body.try_next().await.map_err(err)? {
            if (out.len() + chunk.len()) as u64 > max {
                return Ok(Some(ReadBlob::TooLarge((out.len() + chunk.len()) as u64)));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(ReadBlob::Bytes(out)))
    }

    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        cache_control: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_cache_control(cache_control.map(str::to_owned))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client.delete_object().bucket(&self.bucket).key(key).send().await.map_err(sdk_err)?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            for o in page.map_err(sdk_err)?.contents.unwrap_or_default() {
                if let Some(k) = o.key {
                    out.push((k, o.size.unwrap_or(0).max(0) as u64));
                }
            }
        }
        Ok(out)
    }

    async fn verified_sha256(&self, key: &str) -> Result<Option<Sha256Hash>, StoreError> {
        use base64::Engine;
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await;
        let head = match head {
            Ok(h) => h,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(None),
            Err(e) => return Err(sdk_err(e)),
        };
        // A multipart object's checksum is of its parts (`…-N`), not of its bytes: not one.
        let digest = head.checksum_sha256().and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
        Ok(digest.and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok()).map(Sha256Hash::from_digest))
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(sdk_err(e)),
        }
    }
}
