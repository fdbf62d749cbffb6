//! The few S3 calls the blob store makes, signed with SigV4 and sent through reqwest.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::{Method, Response, StatusCode};

use super::config::{Credentials, S3Config};
use super::sigv4::{self, Canonical, Scope, UNSIGNED_PAYLOAD};
use super::xml;
use crate::storage::{StorageError, StorageResult};

/// The backend's name in errors and metrics.
pub const BACKEND: &str = "s3";

/// How long a connection attempt may take before the bucket counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a response may stall between bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A signed-request client for one bucket.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `http://127.0.0.1:3900`, or `https://bucket.s3.amazonaws.com` for virtual hosts.
    origin: String,
    /// The `Host` header the requests carry, as signed.
    host: String,
    /// `/bucket` with path-style addressing, else empty.
    bucket_path: String,
    bucket: String,
    region: String,
    credentials: Credentials,
}

/// One object in a listing.
pub struct Listed {
    /// Its key, the store's prefix included.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// One page of a listing.
pub struct Listing {
    /// The objects, in key order.
    pub objects: Vec<Listed>,
    /// Where the next page starts, if there is one.
    pub next: Option<String>,
}

/// What a HEAD says about an object.
pub struct Head {
    /// Its size.
    pub size: u64,
    /// Its user metadata header `x-amz-meta-<name>`, if asked for and present.
    pub meta: Option<String>,
}

/// A connection-level failure: the service cannot be reached.
pub fn unavailable(reason: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable {
        backend: BACKEND,
        reason: reason.to_string(),
    }
}

impl Client {
    /// A client for the bucket `config` names.
    pub fn new(config: &S3Config, tls: rustls::ClientConfig) -> Result<Client, String> {
        let endpoint = config.endpoint_url();
        let url = reqwest::Url::parse(&endpoint).map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
        let host_name = url
            .host_str()
            .ok_or_else(|| format!("endpoint {endpoint:?} has no host"))?;
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let (host, bucket_path) = if config.path_style {
            (
                format!("{host_name}{port}"),
                format!("/{}", sigv4::encode(&config.bucket, false)),
            )
        } else {
            (format!("{}.{host_name}{port}", config.bucket), String::new())
        };
        if config.bucket.is_empty() {
            return Err("[storage.s3] bucket is not set".to_owned());
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("rbuild-registry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                origin: format!("{}://{host}", url.scheme()),
                host,
                bucket_path,
                bucket: config.bucket.clone(),
                region: config.region.clone(),
                credentials: config.credentials()?,
            }),
        })
    }

    /// The canonical path of `key` (the bucket itself when empty).
    fn path(&self, key: &str) -> String {
        let path = format!("{}/{}", self.inner.bucket_path, sigv4::encode(key, true));
        if key.is_empty() && !self.inner.bucket_path.is_empty() {
            self.inner.bucket_path.clone()
        } else {
            path
        }
    }

    /// Sends a signed request; a failure to reach the service, or a 5xx, is `Unavailable`.
    pub async fn send(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: Option<Bytes>,
    ) -> StorageResult<Response> {
        let inner = &self.inner;
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let path = self.path(key);
        let amz_date = amz_date(SystemTime::now());
        let mut signed = vec![
            ("host".to_owned(), inner.host.clone()),
            ("x-amz-content-sha256".to_owned(), UNSIGNED_PAYLOAD.to_owned()),
            ("x-amz-date".to_owned(), amz_date.clone()),
        ];
        if let Some(token) = &inner.credentials.token {
            signed.push(("x-amz-security-token".to_owned(), token.clone()));
        }
        signed.extend(
            headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone())),
        );
        let scope = Scope {
            region: &inner.region,
            amz_date: &amz_date,
        };
        let canonical = Canonical {
            method: method.as_str(),
            path: &path,
            query: &query,
            headers: &signed,
        };
        let authorization = sigv4::authorization(&inner.credentials, &scope, &canonical, UNSIGNED_PAYLOAD);
        let mut url = format!("{}{path}", inner.origin);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&sigv4::query_string(&query));
        }
        let mut request = inner
            .http
            .request(method, url)
            .header("authorization", authorization);
        for (name, value) in signed.iter().filter(|(name, _)| name != "host") {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(unavailable)?;
        if response.status().is_server_error() {
            return Err(failure("S3 request", response).await);
        }
        Ok(response)
    }

    /// A GET URL for `key` that works without credentials for `expires`.
    pub fn presign(&self, key: &str, expires: Duration) -> String {
        let path = self.path(key);
        let amz_date = amz_date(SystemTime::now());
        let scope = Scope {
            region: &self.inner.region,
            amz_date: &amz_date,
        };
        let headers = [("host".to_owned(), self.inner.host.clone())];
        let canonical = Canonical {
            method: "GET",
            path: &path,
            query: &[],
            headers: &headers,
        };
        let query = sigv4::presign_query(&self.inner.credentials, &scope, &canonical, expires.as_secs());
        format!("{}{path}?{query}", self.inner.origin)
    }

    /// Whether the bucket answers.
    pub async fn head_bucket(&self) -> StorageResult<()> {
        let response = self.send(Method::HEAD, "", &[], &[], None).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(unavailable(format!(
                "bucket {} answers {}",
                self.inner.bucket,
                response.status()
            )))
        }
    }

    /// An object's size and one metadata value, or `None` if it does not exist.
    pub async fn head(&self, key: &str, meta: &str) -> StorageResult<Option<Head>> {
        let response = self.send(Method::HEAD, key, &[], &[], None).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = ok("HEAD", response).await?;
        // reqwest reports a HEAD response's (empty) body length, not the object's.
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let size = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let meta = header(&format!("x-amz-meta-{meta}")).map(str::to_owned);
        Ok(Some(Head { size, meta }))
    }

    /// An object's bytes in `range` (a response to stream), or `None` if it does not exist.
    pub async fn get(&self, key: &str, range: Option<(u64, u64)>) -> StorageResult<Option<Response>> {
        let headers: Vec<(&str, String)> = range
            .map(|(start, end)| ("range", format!("bytes={start}-{}", end - 1)))
            .into_iter()
            .collect();
        let response = self.send(Method::GET, key, &[], &headers, None).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ok("GET", response).await.map(Some)
    }

    /// Writes an object whole, with one metadata value.
    pub async fn put(&self, key: &str, body: Bytes, meta: (&str, String)) -> StorageResult<()> {
        let headers = [(format!("x-amz-meta-{}", meta.0), meta.1)];
        let headers: Vec<(&str, String)> = headers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        let response = self.send(Method::PUT, key, &[], &headers, Some(body)).await?;
        ok("PUT", response).await.map(drop)
    }

    /// Deletes an object (deleting a missing one succeeds, as in S3).
    pub async fn delete(&self, key: &str) -> StorageResult<()> {
        let response = self.send(Method::DELETE, key, &[], &[], None).await?;
        ok("DELETE", response).await.map(drop)
    }

    /// Copies `source` to `dest` inside the bucket, replacing the metadata with `meta`.
    pub async fn copy(&self, source: &str, dest: &str, meta: (&str, String)) -> StorageResult<()> {
        let headers = [
            (
                "x-amz-copy-source",
                format!("/{}/{}", self.inner.bucket, sigv4::encode(source, true)),
            ),
            ("x-amz-metadata-directive", "REPLACE".to_owned()),
            (&*format!("x-amz-meta-{}", meta.0), meta.1),
        ];
        let response = self.send(Method::PUT, dest, &[], &headers, None).await?;
        let body = ok_text("CopyObject", response).await?;
        xml_error("CopyObject", &body)
    }

    /// One page of the keys under `prefix` after `start_after`, or after a continuation.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
        max_keys: usize,
    ) -> StorageResult<Listing> {
        let max_keys = max_keys.to_string();
        let mut query = vec![("list-type", "2"), ("prefix", prefix), ("max-keys", &max_keys)];
        if let Some(token) = continuation {
            query.push(("continuation-token", token));
        } else if let Some(after) = start_after {
            query.push(("start-after", after));
        }
        let response = self.send(Method::GET, "", &query, &[], None).await?;
        let body = ok_text("ListObjectsV2", response).await?;
        let mut objects = Vec::new();
        for entry in xml::elements(&body, "Contents") {
            let field = |name| xml::element(entry, name).map(xml::unescape);
            let (Some(key), Some(size), Some(modified)) =
                (field("Key"), field("Size"), field("LastModified"))
            else {
                return Err(malformed("ListObjectsV2", &body));
            };
            objects.push(Listed {
                key,
                size: size.parse().map_err(|_| malformed("ListObjectsV2", &body))?,
                modified: rbuild_client::auth::parse_rfc3339(&modified)
                    .ok_or_else(|| malformed("ListObjectsV2", &body))?,
            });
        }
        let truncated = xml::element(&body, "IsTruncated") == Some("true");
        let next = xml::element(&body, "NextContinuationToken")
            .filter(|_| truncated)
            .map(xml::unescape);
        Ok(Listing { objects, next })
    }

    /// Starts a multipart upload to `key`; returns its id.
    pub async fn create_multipart(&self, key: &str) -> StorageResult<String> {
        let response = self
            .send(Method::POST, key, &[("uploads", "")], &[], None)
            .await?;
        let body = ok_text("CreateMultipartUpload", response).await?;
        xml::element(&body, "UploadId")
            .map(xml::unescape)
            .ok_or_else(|| malformed("CreateMultipartUpload", &body))
    }

    /// Uploads part `number` (from 1) of a multipart upload; returns its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: usize,
        body: Bytes,
    ) -> StorageResult<String> {
        let number = number.to_string();
        let query = [("partNumber", number.as_str()), ("uploadId", upload)];
        let response = self.send(Method::PUT, key, &query, &[], Some(body)).await?;
        let response = ok("UploadPart", response).await?;
        response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| io_error("UploadPart", "no ETag in the response"))
    }

    /// Assembles the parts (ETags in order) into the object.
    pub async fn complete_multipart(&self, key: &str, upload: &str, etags: &[String]) -> StorageResult<()> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml::escape(etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let query = [("uploadId", upload)];
        let response = self
            .send(Method::POST, key, &query, &[], Some(Bytes::from(body)))
            .await?;
        let text = ok_text("CompleteMultipartUpload", response).await?;
        xml_error("CompleteMultipartUpload", &text)
    }

    /// Abandons a multipart upload and its parts (a missing one is not an error).
    pub async fn abort_multipart(&self, key: &str, upload: &str) -> StorageResult<()> {
        let response = self
            .send(Method::DELETE, key, &[("uploadId", upload)], &[], None)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        ok("AbortMultipartUpload", response).await.map(drop)
    }
}

/// `YYYYMMDDTHHMMSSZ`.
fn amz_date(now: SystemTime) -> String {
    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let text = rbuild_oci::time::rfc3339(i64::try_from(seconds).unwrap_or(i64::MAX));
    text.replace(['-', ':'], "")
}

fn io_error(op: &str, reason: impl std::fmt::Display) -> StorageError {
    StorageError::io(format!("S3 {op}"), std::io::Error::other(reason.to_string()))
}

fn malformed(op: &str, body: &str) -> StorageError {
    io_error(
        op,
        format!(
            "unexpected response: {}",
            body.chars().take(200).collect::<String>()
        ),
    )
}

/// The response if it succeeded, else its status and S3 error code as an error.
pub async fn ok(op: &str, response: Response) -> StorageResult<Response> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(failure(op, response).await)
    }
}

/// The body of a successful response.
async fn ok_text(op: &str, response: Response) -> StorageResult<String> {
    ok(op, response).await?.text().await.map_err(unavailable)
}

async fn failure(op: &str, response: Response) -> StorageError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let code = xml::element(&body, "Code").unwrap_or("");
    let message = xml::element(&body, "Message").unwrap_or("");
    let reason = format!("{op}: {status} {code} {message}");
    if status.is_server_error() {
        unavailable(reason)
    } else {
        io_error(op, reason)
    }
}

/// S3 may answer 200 and still fail a copy or a completion: the body is then an `<Error>`.
fn xml_error(op: &str, body: &str) -> StorageResult<()> {
    match xml::element(body, "Error") {
        Some(error) => Err(io_error(
            op,
            format!(
                "{} {}",
                xml::element(error, "Code").unwrap_or(""),
                xml::element(error, "Message").unwrap_or("")
            ),
        )),
        None => Ok(()),
    }
}
