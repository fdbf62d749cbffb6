//! `[[notifications]]`: one table per endpoint that receives events.
//!
//! ```toml
//! [[notifications]]
//! name = "ci"                       # the endpoint's name in logs and metrics (default: its index)
//! url = "https://hooks.example.com/registry"
//! headers = { Authorization = "Bearer s3cr3t", X-Team = ["a", "b"] }
//! timeout_secs = 5
//! actions = ["push", "delete"]      # only these (default: pull, push, mount and delete)
//! ignoredmediatypes = ["application/octet-stream"]   # no blob events, as in distribution
//! ignore = { actions = ["pull"], mediatypes = [] }   # distribution's `ignore` block
//! queue_size = 1000                 # events waiting for delivery; more are dropped
//! backoff_ms = 1000                 # first retry delay, doubled per failure
//! max_backoff_ms = 60000
//! ```
//!
//! The URL and headers are checked when the file is read, so a typo fails at start-up with
//! the line it is on rather than at the first push.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::event::EventAction;

/// One notification endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// The endpoint's name in logs and the `endpoint` label of the metrics; unset, its
    /// position among the `[[notifications]]` tables, from 0.
    #[serde(default)]
    pub name: Option<String>,
    /// Where events are POSTed (`http` or `https`).
    pub url: EndpointUrl,
    /// Headers sent with every request (a name maps to a value or a list of values).
    #[serde(default)]
    pub headers: Headers,
    /// How long one delivery attempt may take, connection included.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// The actions sent; empty or unset, every action.
    #[serde(default)]
    pub actions: Vec<EventAction>,
    /// The target media types sent; empty or unset, every media type.
    #[serde(default)]
    pub mediatypes: Vec<String>,
    /// Target media types never sent (distribution's `ignoredmediatypes`).
    #[serde(default)]
    pub ignoredmediatypes: Vec<String>,
    /// Media types and actions never sent (distribution's `ignore`).
    #[serde(default)]
    pub ignore: Ignore,
    /// How many events may wait for delivery; when the queue is full, new events are dropped
    /// (with a warning and a metric) rather than holding up the requests that caused them.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// The delay before the first retry of a failed delivery; each further failure doubles it.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// The longest delay between retries.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Keeps the table in the file but sends nothing.
    #[serde(default)]
    pub disabled: bool,
}

/// Events never sent, as distribution's `ignore` block lists them. An event matching either
/// list is left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ignore {
    /// Target media types.
    pub mediatypes: Vec<String>,
    /// Actions.
    pub actions: Vec<EventAction>,
}

fn default_timeout_secs() -> u64 {
    5
}

fn default_queue_size() -> usize {
    1000
}

fn default_backoff_ms() -> u64 {
    1000
}

fn default_max_backoff_ms() -> u64 {
    60_000
}

impl EndpointConfig {
    /// An endpoint at `url` with every other setting at its default.
    pub fn new(url: EndpointUrl) -> EndpointConfig {
        EndpointConfig {
            name: None,
            url,
            headers: Headers::default(),
            timeout_secs: default_timeout_secs(),
            actions: Vec::new(),
            mediatypes: Vec::new(),
            ignoredmediatypes: Vec::new(),
            ignore: Ignore::default(),
            queue_size: default_queue_size(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            disabled: false,
        }
    }

    /// The timeout of one delivery attempt.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// The delay before the first retry.
    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.backoff_ms.max(1))
    }

    /// The longest delay between retries.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms.max(self.backoff_ms).max(1))
    }
}

/// An absolute `http` or `https` URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointUrl(String);

impl EndpointUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL for log lines: scheme, host, port and path, without user information or a
    /// query, either of which may hold a credential.
    pub fn loggable(&self) -> String {
        let Ok(uri) = self.0.parse::<Uri>() else {
            return String::new();
        };
        let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}{}",
            uri.scheme_str().unwrap_or_default(),
            uri.host().unwrap_or_default(),
            uri.path()
        )
    }
}

impl TryFrom<String> for EndpointUrl {
    type Error = String;

    fn try_from(url: String) -> Result<EndpointUrl, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("notification url {url:?}: {e}"))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(EndpointUrl(url)),
            _ => Err(format!(
                "notification url {url:?} must be absolute, http:// or https:// with a host"
            )),
        }
    }
}

impl From<EndpointUrl> for String {
    fn from(url: EndpointUrl) -> String {
        url.0
    }
}

/// Headers for every request to an endpoint, checked when the configuration is read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Headers(pub HeaderMap);

/// What a header name maps to in the file.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Headers, D::Error> {
        let table = BTreeMap::<String, HeaderValues>::deserialize(deserializer)?;
        let mut map = HeaderMap::new();
        for (name, values) in table {
            let header = HeaderName::try_from(name.as_str())
                .map_err(|e| serde::de::Error::custom(format!("header name {name:?}: {e}")))?;
            let values = match values {
                HeaderValues::One(value) => vec![value],
                HeaderValues::Many(values) => values,
            };
            for value in values {
                let value = HeaderValue::try_from(value).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "header {name:?}: a value holds a character HTTP headers cannot carry"
                    ))
                })?;
                map.append(header.clone(), value);
            }
        }
        Ok(Headers(map))
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut table = BTreeMap::<&str, Vec<String>>::new();
        for (name, value) in &self.0 {
            table
                .entry(name.as_str())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let table: BTreeMap<&str, HeaderValues> = table
            .into_iter()
            .map(|(name, values)| (name, HeaderValues::Many(values)))
            .collect();
        table.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn reads_endpoints_with_defaults() {
        let c: Config = toml::from_str(
            r#"
            [[notifications]]
            url = "http://127.0.0.1:9000/events"
            [[notifications]]
            name = "ci"
            url = "https://hooks.example.com/r"
            headers = { Authorization = "Bearer t", X-Team = ["a", "b"] }
            timeout_secs = 2
            actions = ["push", "delete"]
            mediatypes = ["application/vnd.oci.image.manifest.v1+json"]
            ignoredmediatypes = ["application/octet-stream"]
            ignore = { actions = ["pull"], mediatypes = ["text/plain"] }
            queue_size = 10
            backoff_ms = 50
            max_backoff_ms = 400
            disabled = true
            "#,
        )
        .unwrap();
        let [first, ci] = &c.notifications[..] else {
            panic!("two endpoints: {:?}", c.notifications)
        };
        assert_eq!(
            first,
            &EndpointConfig::new("http://127.0.0.1:9000/events".to_owned().try_into().unwrap())
        );
        assert_eq!(first.timeout(), Duration::from_secs(5));
        assert_eq!(ci.name.as_deref(), Some("ci"));
        assert_eq!(ci.headers.0.get_all("x-team").iter().count(), 2);
        assert_eq!(ci.headers.0["authorization"], "Bearer t");
        assert_eq!(ci.actions, [EventAction::Push, EventAction::Delete]);
        assert_eq!(ci.ignore.actions, [EventAction::Pull]);
        assert_eq!(
            (ci.backoff(), ci.max_backoff()),
            (Duration::from_millis(50), Duration::from_millis(400))
        );
        assert!(ci.disabled);
    }

    #[test]
    fn bad_urls_headers_and_actions_fail_at_load() {
        for (toml, expected) in [
            ("url = \"ftp://x/\"", "must be absolute"),
            ("url = \"/events\"", "must be absolute"),
            (
                "url = \"http://x/\"\nheaders = { \"Bad Name\" = \"v\" }",
                "header name",
            ),
            (
                "url = \"http://x/\"\nheaders = { A = \"line\\nbreak\" }",
                "cannot carry",
            ),
            ("url = \"http://x/\"\nactions = [\"fetch\"]", "fetch"),
            (
                "url = \"http://x/\"\nignored_media_types = []",
                "ignored_media_types",
            ),
            ("name = \"no url\"", "url"),
        ] {
            let err = toml::from_str::<Config>(&format!("[[notifications]]\n{toml}\n")).unwrap_err();
            assert!(err.to_string().contains(expected), "{toml}: {err}");
        }
    }

    #[test]
    fn logged_urls_carry_no_credentials() {
        let url = |u: &str| EndpointUrl::try_from(u.to_owned()).unwrap().loggable();
        assert_eq!(
            url("https://bot:s3cr3t@hooks.example.com:8443/r?token=t"),
            "https://hooks.example.com:8443/r"
        );
        assert_eq!(url("http://127.0.0.1/events"), "http://127.0.0.1/events");
    }

    #[test]
    fn round_trips_through_toml() {
        let mut endpoint = EndpointConfig::new("http://h/e".to_owned().try_into().unwrap());
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        endpoint.headers = Headers(headers);
        let config = Config {
            notifications: vec![endpoint],
            ..Config::default()
        };
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), config);
    }
}
