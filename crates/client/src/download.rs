//! Plain HTTP(S) downloads, for `ADD <url>`: the same TLS trust as registries (system roots
//! plus `--tls-ca`), redirects followed, the body streamed to a file and hashed on the way.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use rbuild_oci::{Algorithm, Digest, Hasher};

use crate::error::ClientError;
use crate::{Client, tls};

/// A finished download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// SHA-256 of the body.
    pub digest: Digest,
    /// Its length.
    pub size: u64,
    /// The server's `Last-Modified`, which ADD gives the file as its mtime.
    pub last_modified: Option<SystemTime>,
}

impl Client {
    /// Downloads `url` into the file `to`, following redirects.
    pub async fn download(&self, url: &str, to: &Path) -> Result<Download, ClientError> {
        let fail = |reason: String| ClientError::Download {
            url: url.to_owned(),
            reason,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(fail("only http and https URLs can be downloaded".to_owned()));
        }
        let options = self.options();
        let roots: Vec<_> = self
            .inner
            .system_roots
            .get_or_init(tls::system_roots)
            .iter()
            .chain(&self.inner.extra_roots)
            .cloned()
            .collect();
        let host = tls::host_certs(&options.certs_d, &[parsed.host_str().unwrap_or_default()])?;
        let tls = tls::client_config(&roots, host, true, &options.certs_d)?;
        let mut builder = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .tls_backend_preconfigured(tls);
        for (name, address) in &options.resolve {
            builder = builder.resolve(name, *address);
        }
        let http = builder.build().map_err(|e| fail(crate::error::chain(&e)))?;
        let mut response = http
            .get(parsed)
            .send()
            .await
            .map_err(|e| fail(crate::error::chain(&e)))?;
        if !response.status().is_success() {
            return Err(fail(format!("the server answered {}", response.status())));
        }
        let last_modified = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let mut file =
            std::fs::File::create(to).map_err(|e| fail(format!("creating {}: {e}", to.display())))?;
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut size = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(crate::error::chain(&e)))?
        {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .map_err(|e| fail(format!("writing {}: {e}", to.display())))?;
        }
        Ok(Download {
            digest: hasher.finalize(),
            size,
            last_modified,
        })
    }
}
