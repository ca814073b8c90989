//! [`S3Store`]: aws-sdk-s3 against AWS S3 or any S3-compatible service.
//!
//! - **Keys** are relative to [`S3Config::prefix`]: the store maps `key` to `{prefix}/{key}` and
//!   strips the prefix again in `list`, so one bucket can hold several clusters.
//! - **Credentials** come from the default chain (env, profile, web identity, ECS, EC2 instance
//!   profile) unless a static key pair is configured (tests against local servers).
//! - **Create-only puts**: `PutObject` with `If-None-Match: *`. A `412 Precondition Failed`
//!   means something is already at the key: a `HEAD` (with checksum mode on) decides between a
//!   retried upload (same size, and the same CRC-32C when the server returns one) and
//!   `Conflict`.
//! - **Checksums**: the file is re-checked against the promised size and CRC-32C before sending
//!   (one sequential read, from page cache right after the buffer's `verify`; not every
//!   S3-compatible server verifies checksums), and the put carries `x-amz-checksum-crc32c` so
//!   AWS S3 rejects bytes damaged in transit (`BadDigest` → `DataLoss`). The SDK computes no
//!   checksum of its own (`RequestChecksumCalculation::WhenRequired`).
//! - **Streaming**: the body is streamed from the file (`ByteStream::read_from`), never read
//!   whole into memory. Single `PutObject` only (limit 5 GiB, far above segment sizes);
//!   multipart is not implemented.
//! - **Errors and retries**: the SDK's standard retry (exponential backoff with jitter) retries
//!   throttling, 5xx and transient IO up to [`S3Config::max_attempts`] times within
//!   [`S3Config::operation_timeout_ms`]; what still fails is mapped to a kind: timeouts,
//!   dispatch failures, 5xx, `SlowDown`, 429 → `Retryable`; 403, missing bucket, other 4xx →
//!   `Fatal`; `NoSuchKey`/404 on an object → `NotFound`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{checksum_file, ObjectInfo, ObjectStore, PutOutcome, GET_BYTES_MAX, LIST_KEYS_MAX};
use crate::error::{ErrorKind, StoreError};

/// Where and how to reach the bucket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket; empty for none. Leading/trailing `/` are ignored.
    #[serde(default)]
    pub prefix: String,
    pub region: String,
    /// Endpoint URL for S3-compatible services (`http://127.0.0.1:9000`); `None` for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    #[serde(default)]
    pub force_path_style: bool,
    /// Static credentials, for tests against local servers. Both or neither; when absent the
    /// default credential chain is used (EC2 instance profiles work).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Budget for one HTTP attempt.
    #[serde(default = "default_operation_attempt_timeout_ms")]
    pub operation_attempt_timeout_ms: u64,
    /// Budget for one operation including the SDK's retries.
    #[serde(default = "default_operation_timeout_ms")]
    pub operation_timeout_ms: u64,
    /// SDK attempts per operation (1 = no SDK retry; the upload scheduler retries anyway).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_operation_attempt_timeout_ms() -> u64 {
    60_000
}
fn default_operation_timeout_ms() -> u64 {
    180_000
}
fn default_max_attempts() -> u32 {
    3
}

impl S3Config {
    /// A config with default timeouts and credential chain.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            region: region.into(),
            endpoint: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            operation_attempt_timeout_ms: default_operation_attempt_timeout_ms(),
            operation_timeout_ms: default_operation_timeout_ms(),
            max_attempts: default_max_attempts(),
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("operation_attempt_timeout_ms", &self.operation_attempt_timeout_ms)
            .field("operation_timeout_ms", &self.operation_timeout_ms)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// An S3 bucket (or a prefix in one) as an [`ObjectStore`].
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Normalized: empty, or without leading/trailing `/`.
    prefix: String,
    region: String,
    endpoint: Option<String>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl S3Store {
    /// Builds the client. Does no network IO: a wrong bucket or missing credentials show up as
    /// `Fatal` errors on the first operation.
    pub async fn new(config: S3Config) -> Result<S3Store, StoreError> {
        if config.bucket.is_empty() {
            return Err(StoreError::fatal("s3: bucket is empty"));
        }
        if config.max_attempts == 0 {
            return Err(StoreError::fatal("s3: max_attempts must be at least 1"));
        }
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .operation_attempt_timeout(Duration::from_millis(config.operation_attempt_timeout_ms))
            .operation_timeout(Duration::from_millis(config.operation_timeout_ms))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts));
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader =
                    loader.credentials_provider(Credentials::new(id, secret, None, None, "camrec-config"));
            }
            (None, None) => {}
            _ => {
                return Err(StoreError::fatal("s3: set both access_key_id and secret_access_key, or neither"))
            }
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk_config = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(config.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(s3_config),
            bucket: config.bucket,
            prefix: config.prefix.trim_matches('/').to_owned(),
            region: config.region,
            endpoint: config.endpoint,
        })
    }

    /// The underlying client (tests use it to create buckets).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The inverse of `full_key`; `None` for keys outside the prefix.
    fn relative_key<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    /// After a `412`: is the object at `key` the one we tried to put?
    async fn compare_existing(&self, key: &str, bytes: u64, crc32c: u32) -> Result<PutOutcome, StoreError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| map_sdk_error("head", key, e))?;
        let have_bytes = head.content_length().unwrap_or(-1);
        let want = crc32c_base64(crc32c);
        // Composite checksums of multipart objects look like "xxxx-3" and are not comparable.
        let crc_differs = head.checksum_crc32_c().is_some_and(|have| !have.contains('-') && have != want);
        if have_bytes == bytes as i64 && !crc_differs {
            Ok(PutOutcome::AlreadyPresent)
        } else {
            Err(StoreError::conflict(format!(
                "{key}: already holds {have_bytes} bytes crc32c {:?}, not {bytes} bytes crc32c {want}",
                head.checksum_crc32_c()
            )))
        }
    }
}

/// S3's checksum header value: base64 of the big-endian CRC.
pub(crate) fn crc32c_base64(crc32c: u32) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = crc32c.to_be_bytes();
    let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    let mut out = String::with_capacity(8);
    for shift in [18, 12, 6, 0] {
        out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
    }
    let last = u32::from(b[3]) << 16;
    out.push(ALPHABET[((last >> 18) & 63) as usize] as char);
    out.push(ALPHABET[((last >> 12) & 63) as usize] as char);
    out.push_str("==");
    out
}

/// Maps an SDK failure to a kind (see the module docs).
fn map_sdk_error<E>(op: &str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorKind::Retryable
        }
        SdkError::ConstructionFailure(_) => ErrorKind::Fatal,
        SdkError::ServiceError(service) => {
            let status = Some(service.raw().status().as_u16());
            match (err.code(), status) {
                (Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"), _) => {
                    ErrorKind::Retryable
                }
                (Some("NoSuchBucket"), _) => ErrorKind::Fatal,
                (Some("NoSuchKey" | "NotFound"), _) | (_, Some(404)) => ErrorKind::NotFound,
                (Some("BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch"), _) => {
                    ErrorKind::DataLoss
                }
                (Some("PreconditionFailed"), _) | (_, Some(412)) => ErrorKind::Conflict,
                (_, Some(408 | 429 | 500..=599)) => ErrorKind::Retryable,
                _ => ErrorKind::Fatal,
            }
        }
        _ => ErrorKind::Fatal,
    };
    StoreError::new(kind, format!("s3 {op} {key}: {}", DisplayErrorContext(&err)))
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        bytes: u64,
        crc32c: u32,
    ) -> Result<PutOutcome, StoreError> {
        // Not every S3-compatible server checks x-amz-checksum-crc32c (moto does not), so the
        // file is checked here as well; right after the buffer's `verify` it is in page cache.
        let owned = path.to_owned();
        let (have_bytes, have_crc) = tokio::task::spawn_blocking(move || checksum_file(&owned))
            .await
            .map_err(|e| StoreError::fatal(format!("s3 put {key}: checksum task failed: {e}")))?
            .map_err(|e| StoreError::io(format_args!("s3 put {key}: read {}", path.display()), &e))?;
        if have_bytes != bytes || have_crc != crc32c {
            return Err(StoreError::data_loss(format!(
                "s3 put {key}: {} is {have_bytes} bytes crc32c {have_crc:08x}, caller promised {bytes} bytes \
                 crc32c {crc32c:08x}",
                path.display()
            )));
        }
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(bytes))
            .build()
            .await
            .map_err(|e| StoreError::fatal(format!("s3 put {key}: open {}: {e}", path.display())))?;
        let content_length = i64::try_from(bytes).map_err(|_| StoreError::fatal("object too large"))?;
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .if_none_match("*")
            .content_length(content_length)
            .content_type("video/mp4")
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(crc32c_base64(crc32c))
            .body(body)
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) => {
                let mapped = map_sdk_error("put", key, e);
                if mapped.kind == ErrorKind::Conflict {
                    self.compare_existing(key, bytes, crc32c).await
                } else {
                    Err(mapped)
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| map_sdk_error("get", key, e))?;
        if let Some(len) = out.content_length() {
            if len < 0 || len as u64 > GET_BYTES_MAX {
                return Err(StoreError::fatal(format!("s3 get {key}: {len} bytes exceeds GET_BYTES_MAX")));
            }
        }
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::retryable(format!("s3 get {key}: reading body: {e}")))?;
        Ok(body.into_bytes())
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectInfo>, StoreError> {
        let max = max.min(LIST_KEYS_MAX);
        let mut out = Vec::new();
        let mut continuation: Option<String> = None;
        while out.len() < max {
            // S3 returns at most 1000 keys per request whatever we ask for.
            let page_keys = (max - out.len()).min(1000) as i32;
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .max_keys(page_keys);
            request = match &continuation {
                Some(token) => request.continuation_token(token),
                None => match start_after {
                    Some(after) => request.start_after(self.full_key(after)),
                    None => request,
                },
            };
            let page = request.send().await.map_err(|e| map_sdk_error("list", prefix, e))?;
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                let Some(key) = self.relative_key(full) else { continue };
                if out.len() < max {
                    out.push(ObjectInfo {
                        key: key.to_owned(),
                        bytes: object.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(token) if page.is_truncated() == Some(true) => continuation = Some(token.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.client.delete_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(_) => Ok(()),
            Err(e) => match map_sdk_error("delete", key, e) {
                not_found if not_found.kind == ErrorKind::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }

    fn describe(&self) -> String {
        let sep = if self.prefix.is_empty() { "" } else { "/" };
        match &self.endpoint {
            Some(endpoint) => format!("s3://{}{sep}{} ({endpoint})", self.bucket, self.prefix),
            None => format!("s3://{}{sep}{} ({})", self.bucket, self.prefix, self.region),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_header_is_base64_big_endian() {
        // CRC-32C("123456789") = 0xe3069283 → bytes e3 06 92 83 → "4waSgw==".
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_base64(0xe306_9283), "4waSgw==");
        assert_eq!(crc32c_base64(0), "AAAAAA==");
        assert_eq!(crc32c_base64(u32::MAX), "/////w==");
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let mut c = S3Config::new("b", "us-east-1");
        c.secret_access_key = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
