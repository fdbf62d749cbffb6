//! `[storage.s3]`: which bucket, where, and with which key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::profile;

/// The bucket blobs live in when `[storage] driver = "s3"`.
///
/// ```toml
/// [storage.s3]
/// endpoint = "http://127.0.0.1:3900"   # default: https://s3.<region>.amazonaws.com
/// region = "garage"
/// bucket = "registry"
/// prefix = ""                          # every key starts with this (e.g. "prod/")
/// path_style = true                    # http://host/bucket/key, not http://bucket.host/key
/// redirect = false                     # blob GETs answer 307 to a presigned URL
/// access_key_id_file = "/run/secrets/s3-key-id"
/// secret_access_key_file = "/run/secrets/s3-secret"
/// ```
///
/// Credentials come from `access_key_id`/`secret_access_key`, else their `*_file` variants (a
/// mounted Kubernetes Secret), else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and
/// `AWS_SESSION_TOKEN`) in the environment, else the `AWS_PROFILE` (or `default`) profile of
/// the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The service's URL; `None` means AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// The signing region (Garage's default is `garage`).
    pub region: String,
    /// The bucket, which must exist.
    pub bucket: String,
    /// A key prefix, so several registries (or tests) can share a bucket.
    pub prefix: String,
    /// Address the bucket in the path rather than the host name (Garage, MinIO, Ceph).
    pub path_style: bool,
    /// Answer blob GETs with a redirect to a presigned URL, so blob bytes bypass the replica.
    pub redirect: bool,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret key.
    pub secret_access_key: Option<String>,
    /// A file holding the access key id.
    pub access_key_id_file: Option<PathBuf>,
    /// A file holding the secret key.
    pub secret_access_key_file: Option<PathBuf>,
}

impl Default for S3Config {
    fn default() -> S3Config {
        S3Config {
            endpoint: None,
            region: "us-east-1".to_owned(),
            bucket: String::new(),
            prefix: String::new(),
            path_style: true,
            redirect: false,
            access_key_id: None,
            secret_access_key: None,
            access_key_id_file: None,
            secret_access_key_file: None,
        }
    }
}

/// The key the requests are signed with.
#[derive(Clone)]
pub struct Credentials {
    /// The access key id.
    pub key_id: String,
    /// The secret key.
    pub secret: String,
    /// A session token, for temporary credentials.
    pub token: Option<String>,
}

impl S3Config {
    /// The endpoint URL, AWS's for the region when none is set.
    pub fn endpoint_url(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }

    /// The credentials from the config, its files, or the environment, in that order.
    pub fn credentials(&self) -> Result<Credentials, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let key_id = secret(&self.access_key_id, &self.access_key_id_file)?;
        let secret_key = secret(&self.secret_access_key, &self.secret_access_key_file)?;
        match (key_id, secret_key) {
            (Some(key_id), Some(secret)) => Ok(Credentials {
                key_id,
                secret,
                token: None,
            }),
            (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(key_id), Some(secret)) => Ok(Credentials {
                    key_id,
                    secret,
                    token: env("AWS_SESSION_TOKEN"),
                }),
                _ => from_profile(),
            },
            _ => Err("[storage.s3] gives only one of the access key id and the secret key".to_owned()),
        }
    }
}

/// The key of `AWS_PROFILE` (else `default`) in the shared credentials file.
fn from_profile() -> Result<Credentials, String> {
    let (path, name) = (profile::path(), profile::name());
    let text = path
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    profile::credentials(&text, &name).ok_or_else(|| {
        let file = path.map_or_else(|| "~/.aws/credentials".to_owned(), |p| p.display().to_string());
        format!(
            "no credentials: set access_key_id and secret_access_key (or their *_file variants) in \
             [storage.s3], or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile {name} in {file}"
        )
    })
}

/// A secret given inline or in a file (trailing newline dropped).
fn secret(inline: &Option<String>, file: &Option<PathBuf>) -> Result<Option<String>, String> {
    if let Some(value) = inline {
        return Ok(Some(value.clone()));
    }
    file.as_deref().map(read_secret).transpose()
}

fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}
