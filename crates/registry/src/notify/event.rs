//! The events receivers get, in distribution's notification envelope, field for field, so a
//! receiver written for distribution (or Harbor's, or a CI hook) reads them unchanged.
//!
//! Empty fields are left out as distribution's `omitempty` leaves them out; `request.id`,
//! `request.method` and `request.useragent` are always there, and so are the `target`,
//! `request`, `actor` and `source` objects.

use serde::{Deserialize, Serialize};

/// The `Content-Type` of every notification request: distribution 2.x's envelope.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// The media type distribution gives blobs in events (it never knows a blob's layer type).
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    /// A manifest or blob was served.
    Pull,
    /// A manifest was stored or a blob upload completed.
    Push,
    /// A blob was linked into a repository from another one.
    Mount,
    /// A manifest, tag or blob was deleted.
    Delete,
}

impl EventAction {
    /// The name the envelope and the configuration use.
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Pull => "pull",
            EventAction::Push => "push",
            EventAction::Mount => "mount",
            EventAction::Delete => "delete",
        }
    }
}

/// The body of a notification request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// One or more events; rbuild, like distribution, sends one per request.
    pub events: Vec<Event>,
}

/// One thing that happened to a repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event, so a receiver can drop a duplicate delivery.
    pub id: String,
    /// When it happened (RFC 3339, UTC).
    pub timestamp: String,
    /// What happened.
    pub action: EventAction,
    /// What it happened to.
    pub target: Target,
    /// The request that caused it.
    pub request: RequestRecord,
    /// Who made the request.
    pub actor: Actor,
    /// Which registry instance saw it.
    pub source: Source,
}

/// What an event is about: a manifest, a blob or a tag in a repository.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The content's media type (`application/octet-stream` for blobs, as distribution says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The content's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The content's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The same as `size`, which old receivers read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// The repository.
    pub repository: String,
    /// Where a mounted blob came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
    /// Where the content can be fetched, by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The tag a manifest was pushed or pulled by, or the tag deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// The request behind an event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Shared by every event one request causes.
    pub id: String,
    /// The client's address (the first `X-Forwarded-For` hop when a proxy names one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// The registry's host name as the client addressed it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The HTTP method.
    pub method: String,
    /// The client's `User-Agent`.
    pub useragent: String,
}

/// Who caused an event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    /// The authenticated user; absent without auth or for anonymous pulls.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The registry instance that generated an event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The host name and port the registry listens on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// Changes on every start of the process.
    #[serde(default, rename = "instanceID", skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_push() -> Event {
        Event {
            id: "asdf-asdf-asdf-asdf-0".to_owned(),
            timestamp: "2006-01-02T15:04:05Z".to_owned(),
            action: EventAction::Push,
            target: Target {
                media_type: Some("application/vnd.oci.image.manifest.v1+json".to_owned()),
                size: Some(1),
                digest: Some("sha256:0123456789abcdef0".to_owned()),
                length: Some(1),
                repository: "library/test".to_owned(),
                url: Some("http://example.com/v2/library/test/manifests/sha256:0123456789abcdef0".to_owned()),
                tag: Some("latest".to_owned()),
                ..Target::default()
            },
            request: RequestRecord {
                id: "asdfasdf".to_owned(),
                addr: "client.local".to_owned(),
                host: "registrycluster.local".to_owned(),
                method: "PUT".to_owned(),
                useragent: "test/0.1".to_owned(),
            },
            actor: Actor {
                name: "test-actor".to_owned(),
            },
            source: Source {
                addr: "hostname.local:port".to_owned(),
                instance_id: "f3a9".to_owned(),
            },
        }
    }

    /// The envelope distribution's own format test pins, with the fields in its order.
    #[test]
    fn envelope_has_distributions_shape_and_field_order() {
        let envelope = Envelope {
            events: vec![manifest_push()],
        };
        let expected = r#"{"events":[{"id":"asdf-asdf-asdf-asdf-0","timestamp":"2006-01-02T15:04:05Z","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:0123456789abcdef0","length":1,"repository":"library/test","url":"http://example.com/v2/library/test/manifests/sha256:0123456789abcdef0","tag":"latest"},"request":{"id":"asdfasdf","addr":"client.local","host":"registrycluster.local","method":"PUT","useragent":"test/0.1"},"actor":{"name":"test-actor"},"source":{"addr":"hostname.local:port","instanceID":"f3a9"}}]}"#;
        assert_eq!(serde_json::to_string(&envelope).unwrap(), expected);
    }

    #[test]
    fn empty_fields_are_left_out_but_the_objects_stay() {
        let event = Event {
            action: EventAction::Delete,
            target: Target {
                repository: "team/app".to_owned(),
                digest: Some("sha256:ab".to_owned()),
                ..Target::default()
            },
            request: RequestRecord {
                id: "r".to_owned(),
                method: "DELETE".to_owned(),
                ..RequestRecord::default()
            },
            actor: Actor::default(),
            source: Source::default(),
            ..manifest_push()
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            value["target"],
            serde_json::json!({"digest": "sha256:ab", "repository": "team/app"})
        );
        assert_eq!(
            value["request"],
            serde_json::json!({"id": "r", "method": "DELETE", "useragent": ""})
        );
        assert_eq!(value["actor"], serde_json::json!({}));
        assert_eq!(value["source"], serde_json::json!({}));
    }

    #[test]
    fn mounts_name_the_repository_they_came_from() {
        let event = Event {
            action: EventAction::Mount,
            target: Target {
                repository: "b".to_owned(),
                from_repository: Some("a".to_owned()),
                ..Target::default()
            },
            ..manifest_push()
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["action"], "mount");
        assert_eq!(value["target"]["fromRepository"], "a");
    }
}
