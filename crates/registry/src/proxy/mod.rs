//! The pull-through cache: repositories whose content comes from an upstream registry on
//! first pull and from local storage after that.
//!
//! - **Which repositories.** Each `[[proxy]]` serves the local repositories under its `prefix`;
//!   the upstream name is the local name minus the prefix (`hub/library/busybox` →
//!   `library/busybox`). The longest matching prefix wins; an empty prefix matches every
//!   name unchanged, which is what docker `registry-mirrors` and containerd `hosts.toml`
//!   mirrors need.
//! - **Manifests** ([`pull`]) are fetched whole (they are small), verified against their
//!   digest and stored like pushed ones; the request that fetched one is answered from the
//!   verified bytes while they are stored ([`storing`]: requests for it meanwhile wait for the
//!   store, and a failed store is logged and fetched again on the next pull). A tag is trusted for `tag_ttl_secs`, then checked
//!   with a `HEAD` upstream; when the upstream cannot answer (down, 5xx, 429), the cached
//!   manifest is served anyway with a warning and a metric. Digests never need checking.
//! - **Blobs** ([`flight`]) stream from the upstream to the first client and into an upload
//!   staging area at once; the blob becomes visible only once its digest checks out, so a
//!   truncated or corrupt upstream answer is never stored. Concurrent pulls of one blob share
//!   one download, through whichever repositories they come: the others wait for it and read
//!   the stored blob, those of another repository once a `HEAD` upstream confirms their
//!   repository has it.
//! - **Pushes** into a proxied prefix are refused unless `allow_push` is set.
//!
//! Tag freshness is kept in memory: after a restart every cached tag is checked once more.
//! Cached content is ordinary content: deletion and garbage collection treat it like any other.

mod config;
pub(crate) mod flight;
mod metrics;
pub(crate) mod pull;
mod storing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rbuild_client::upstream::Upstream;
use rbuild_client::{Client, ClientOptions, Credential, CredentialOrigin};
use rbuild_oci::{RepositoryName, Tag};

pub use config::ProxyConfig;
pub use metrics::ProxyMetrics;

use crate::error::{ErrorCode, RegistryError};

/// Why a `[[proxy]]` table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The `url` is not `http(s)://host[:port]`.
    #[error("[[proxy]] url {url:?}: {reason}")]
    Url {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The credentials are incomplete or the environment variable is unset.
    #[error("[[proxy]] {url}: {reason}")]
    Credentials {
        /// The upstream.
        url: String,
        /// What is missing.
        reason: String,
    },
    /// The client for the upstream could not be made (an unreadable `ca`, say).
    #[error("[[proxy]] {url}: {source}")]
    Client {
        /// The upstream.
        url: String,
        /// The cause.
        source: Box<rbuild_client::ClientError>,
    },
}

/// One upstream and what the cache knows about it.
pub(crate) struct Proxy {
    pub(crate) config: ProxyConfig,
    pub(crate) upstream: Upstream,
    /// When each cached tag (`repository:tag`) was last confirmed by the upstream.
    confirmed: Mutex<HashMap<String, Instant>>,
}

impl Proxy {
    fn open(config: &ProxyConfig) -> Result<Proxy, ProxyError> {
        let url_error = |reason: &str| ProxyError::Url {
            url: config.url.clone(),
            reason: reason.to_owned(),
        };
        let (plain, authority) = if let Some(rest) = config.url.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = config.url.strip_prefix("https://") {
            (false, rest)
        } else {
            return Err(url_error("must start with https:// or http://"));
        };
        let authority = authority.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(url_error("must be a registry's root, with no path"));
        }
        let options = ClientOptions {
            insecure_registries: if plain {
                vec![authority.to_owned()]
            } else {
                Vec::new()
            },
            ca_files: config.ca.iter().cloned().collect(),
            ..ClientOptions::default()
        };
        let client_error = |source| ProxyError::Client {
            url: config.url.clone(),
            source: Box::new(source),
        };
        let credential = credential(config)?;
        let origin = CredentialOrigin::Given {
            described: format!("the [[proxy]] table for {}", config.url),
            remedy: "correct its username and password (or password_env)".to_owned(),
        };
        let upstream = Client::new(options)
            .and_then(|client| client.upstream(authority, credential, origin))
            .map_err(client_error)?;
        Ok(Proxy {
            config: config.clone(),
            upstream,
            confirmed: Mutex::new(HashMap::new()),
        })
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.config.tag_ttl_secs)
    }

    /// Whether the upstream confirmed `tag` less than the TTL ago.
    pub(crate) fn is_fresh(&self, name: &RepositoryName, tag: &Tag) -> bool {
        let confirmed = self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        confirmed
            .get(&format!("{name}:{tag}"))
            .is_some_and(|at| at.elapsed() < self.ttl())
    }

    /// Records that the upstream just confirmed `tag`.
    pub(crate) fn confirm(&self, name: &RepositoryName, tag: &Tag) {
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        confirmed.insert(format!("{name}:{tag}"), Instant::now());
    }
}

/// The credential a table configures: `username` with `password` or `password_env`.
fn credential(config: &ProxyConfig) -> Result<Option<Credential>, ProxyError> {
    let fail = |reason: String| ProxyError::Credentials {
        url: config.url.clone(),
        reason,
    };
    let password = match (&config.password, &config.password_env) {
        (Some(_), Some(_)) => return Err(fail("set password or password_env, not both".to_owned())),
        (Some(password), None) => Some(password.clone()),
        (None, Some(var)) => Some(
            std::env::var(var).map_err(|_| fail(format!("password_env names {var}, which is not set")))?,
        ),
        (None, None) => None,
    };
    match (&config.username, password) {
        (Some(username), Some(password)) => Ok(Some(Credential::Password {
            username: username.clone(),
            password,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(fail("username needs password or password_env".to_owned())),
        (None, Some(_)) => Err(fail("a password needs a username".to_owned())),
    }
}

/// Every configured upstream, the downloads in flight, and the cache's metrics.
pub(crate) struct Proxies {
    proxies: Vec<Arc<Proxy>>,
    pub(crate) flights: Arc<flight::Flights>,
    pub(crate) storing: Arc<storing::Storing>,
    pub(crate) metrics: ProxyMetrics,
}

impl Proxies {
    /// The upstreams `configs` describe (credentials and CA files read now).
    pub(crate) fn open(configs: &[ProxyConfig]) -> Result<Proxies, ProxyError> {
        Ok(Proxies {
            proxies: configs
                .iter()
                .map(|config| Proxy::open(config).map(Arc::new))
                .collect::<Result<_, _>>()?,
            flights: Arc::default(),
            storing: Arc::default(),
            metrics: ProxyMetrics::default(),
        })
    }

    /// The upstream serving `name` and the name there, if `name` is proxied.
    pub(crate) fn route(&self, name: &RepositoryName) -> Option<(&Arc<Proxy>, RepositoryName)> {
        self.proxies
            .iter()
            .filter_map(|proxy| {
                let prefix = proxy.config.prefix.trim_matches('/');
                let rest = if prefix.is_empty() {
                    name.as_str()
                } else {
                    name.as_str().strip_prefix(prefix)?.strip_prefix('/')?
                };
                Some((prefix.len(), proxy, rest.parse().ok()?))
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, proxy, upstream_name)| (proxy, upstream_name))
    }

    /// Refuses a push into a proxied repository whose upstream does not allow them.
    pub(crate) fn check_push(&self, name: &RepositoryName) -> Result<(), RegistryError> {
        match self.route(name) {
            Some((proxy, _)) if !proxy.config.allow_push => Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!(
                    "{name} is a pull-through cache of {} and takes no pushes (set allow_push = true in its [[proxy]] table to allow them)",
                    proxy.config.url
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(url: &str, prefix: &str) -> ProxyConfig {
        toml::from_str(&format!("url = {url:?}\nprefix = {prefix:?}\n")).unwrap()
    }

    fn name(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_routes_and_strips() {
        let proxies = Proxies::open(&[
            table("http://127.0.0.1:1", ""),
            table("http://127.0.0.1:2", "hub"),
            table("https://127.0.0.1:3", "hub/library"),
        ])
        .unwrap();
        let routed = |n: &str| {
            proxies
                .route(&name(n))
                .map(|(p, upstream)| (p.config.url.clone(), upstream.to_string()))
        };
        assert_eq!(
            routed("library/busybox"),
            Some(("http://127.0.0.1:1".into(), "library/busybox".into()))
        );
        assert_eq!(
            routed("hub/team/app"),
            Some(("http://127.0.0.1:2".into(), "team/app".into()))
        );
        assert_eq!(
            routed("hub/library/busybox"),
            Some(("https://127.0.0.1:3".into(), "busybox".into()))
        );
        assert_eq!(
            routed("hubx/app"),
            Some(("http://127.0.0.1:1".into(), "hubx/app".into()))
        );
        let only_prefixed = Proxies::open(&[table("http://127.0.0.1:2", "hub")]).unwrap();
        assert!(only_prefixed.route(&name("hub")).is_none());
        assert!(only_prefixed.route(&name("other/app")).is_none());
    }

    #[test]
    fn pushes_refused_unless_allowed() {
        let mut open = table("http://127.0.0.1:2", "open");
        open.allow_push = true;
        let proxies = Proxies::open(&[table("http://127.0.0.1:1", "hub"), open]).unwrap();
        let err = proxies.check_push(&name("hub/app")).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unsupported);
        assert!(err.message.contains("allow_push"), "{}", err.message);
        assert!(proxies.check_push(&name("open/app")).is_ok());
        assert!(proxies.check_push(&name("mine/app")).is_ok());
    }

    #[test]
    fn bad_tables_are_refused() {
        for (url, reason) in [
            ("ftp://x", "https://"),
            ("https://x/v2", "no path"),
            ("https://", "no path"),
        ] {
            let err = Proxies::open(&[table(url, "")]).err().unwrap();
            assert!(err.to_string().contains(reason), "{url}: {err}");
        }
        let mut no_password = table("https://x", "");
        no_password.username = Some("u".into());
        assert!(Proxies::open(&[no_password.clone()]).is_err());
        no_password.password_env = Some("RBUILD_TEST_SURELY_UNSET_VARIABLE".into());
        let err = Proxies::open(&[no_password]).err().unwrap();
        assert!(
            err.to_string().contains("RBUILD_TEST_SURELY_UNSET_VARIABLE"),
            "{err}"
        );
    }
}
