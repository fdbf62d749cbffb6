//! `[[proxy]]`: the upstream registries this one is a pull-through cache of.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One upstream, one entry of `[[proxy]]`.
///
/// ```toml
/// [[proxy]]
/// url = "https://registry-1.docker.io"
/// prefix = "hub"              # hub/library/busybox here is library/busybox there
/// username = "me"
/// password_env = "HUB_TOKEN"  # or password = "…"
/// ca = "/etc/rbuild/upstream-ca.pem"
/// tag_ttl_secs = 300
/// allow_push = false
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The upstream registry: `https://host[:port]` (or `http://` for plain HTTP).
    pub url: String,
    /// The local repositories it serves: those named `<prefix>/…`, whose upstream name is the
    /// rest. Empty (the default): every repository, under the same name upstream — what
    /// docker's `registry-mirrors` and containerd's `hosts.toml` mirrors need, since they send
    /// the upstream's own names (`library/busybox`).
    #[serde(default)]
    pub prefix: String,
    /// The user to log in to the upstream as; none: anonymous.
    #[serde(default)]
    pub username: Option<String>,
    /// The password (or access token) for `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// The environment variable holding the password, to keep it out of the file.
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA certificates (PEM) the upstream's TLS certificate must chain to, besides the
    /// system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// How long a tag fetched from the upstream is served before a `HEAD` upstream checks it
    /// again. Pulls by digest never need checking.
    #[serde(default = "default_tag_ttl_secs")]
    pub tag_ttl_secs: u64,
    /// Accept pushes into the prefix (they stay local: the upstream is never written).
    /// Off: pushes are refused with UNSUPPORTED.
    #[serde(default)]
    pub allow_push: bool,
}

fn default_tag_ttl_secs() -> u64 {
    300
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn reads_proxy_tables() {
        let c: Config = toml::from_str(
            r#"
            [[proxy]]
            url = "https://registry-1.docker.io"
            [[proxy]]
            url = "http://127.0.0.1:5001"
            prefix = "local"
            username = "u"
            password_env = "P"
            ca = "/ca.pem"
            tag_ttl_secs = 5
            allow_push = true
            "#,
        )
        .unwrap();
        assert_eq!(c.proxy.len(), 2);
        assert_eq!(c.proxy[0].prefix, "");
        assert_eq!(c.proxy[0].tag_ttl_secs, 300);
        assert!(!c.proxy[0].allow_push);
        assert_eq!(c.proxy[1].prefix, "local");
        assert_eq!(c.proxy[1].password_env.as_deref(), Some("P"));
        assert!(c.proxy[1].allow_push);
        assert!(toml::from_str::<Config>("[[proxy]]\nurl = \"x\"\nttl = 1\n").is_err());
        assert!(toml::from_str::<Config>("[[proxy]]\nprefix = \"x\"\n").is_err());
    }
}
