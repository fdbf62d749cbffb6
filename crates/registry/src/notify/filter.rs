//! Which events an endpoint gets: its include lists (`actions`, `mediatypes`) and its
//! exclude lists (distribution's `ignoredmediatypes` and `ignore`). An event is sent when
//! both include lists admit it (an empty list admits everything) and no exclude list names
//! its action or media type. Events without a media type (deletes) pass media type lists.

use super::config::EndpointConfig;
use super::event::{Event, EventAction};

impl EndpointConfig {
    /// Whether this endpoint receives `event`.
    pub fn accepts(&self, event: &Event) -> bool {
        self.accepts_parts(event.action, event.target.media_type.as_deref())
    }

    fn accepts_parts(&self, action: EventAction, media_type: Option<&str>) -> bool {
        let included = (self.actions.is_empty() || self.actions.contains(&action))
            && (self.mediatypes.is_empty()
                || media_type.is_none_or(|m| self.mediatypes.iter().any(|t| t == m)));
        let ignored = self.ignore.actions.contains(&action)
            || media_type.is_some_and(|m| {
                self.ignoredmediatypes
                    .iter()
                    .chain(&self.ignore.mediatypes)
                    .any(|t| t == m)
            });
        included && !ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::BLOB_MEDIA_TYPE;

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn endpoint(toml: &str) -> EndpointConfig {
        toml::from_str(&format!("url = \"http://127.0.0.1:1/\"\n{toml}")).unwrap()
    }

    #[test]
    fn by_default_everything_is_sent() {
        let e = endpoint("");
        for action in [
            EventAction::Pull,
            EventAction::Push,
            EventAction::Mount,
            EventAction::Delete,
        ] {
            assert!(e.accepts_parts(action, Some(BLOB_MEDIA_TYPE)));
            assert!(e.accepts_parts(action, None));
        }
    }

    #[test]
    fn actions_include_only_those_listed() {
        let e = endpoint("actions = [\"push\", \"delete\"]");
        assert!(e.accepts_parts(EventAction::Push, Some(MANIFEST)));
        assert!(e.accepts_parts(EventAction::Delete, None));
        assert!(!e.accepts_parts(EventAction::Pull, Some(MANIFEST)));
        assert!(!e.accepts_parts(EventAction::Mount, Some(BLOB_MEDIA_TYPE)));
    }

    #[test]
    fn mediatypes_include_only_those_listed_and_deletes() {
        let e = endpoint(&format!("mediatypes = [\"{MANIFEST}\"]"));
        assert!(e.accepts_parts(EventAction::Push, Some(MANIFEST)));
        assert!(!e.accepts_parts(EventAction::Push, Some(BLOB_MEDIA_TYPE)));
        assert!(e.accepts_parts(EventAction::Delete, None));
    }

    #[test]
    fn ignored_media_types_and_actions_are_left_out() {
        let e = endpoint(&format!(
            "ignoredmediatypes = [\"{BLOB_MEDIA_TYPE}\"]\nignore = {{ actions = [\"pull\"], mediatypes = [\"text/plain\"] }}"
        ));
        assert!(e.accepts_parts(EventAction::Push, Some(MANIFEST)));
        assert!(!e.accepts_parts(EventAction::Push, Some(BLOB_MEDIA_TYPE)));
        assert!(!e.accepts_parts(EventAction::Push, Some("text/plain")));
        assert!(!e.accepts_parts(EventAction::Pull, Some(MANIFEST)));
        assert!(e.accepts_parts(EventAction::Delete, None));
    }

    #[test]
    fn an_exclusion_wins_over_an_inclusion() {
        let e = endpoint("actions = [\"pull\"]\nignore = { actions = [\"pull\"] }");
        assert!(!e.accepts_parts(EventAction::Pull, Some(MANIFEST)));
    }
}
