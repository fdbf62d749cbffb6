//! Reading JSON documents that other tools wrote, the way their own readers do.
//!
//! Docker, containerd, BuildKit and the registries are written in Go, whose encoder writes an
//! empty slice or map as `null` (`"Env": null`, `"Volumes": null`, `"annotations": null`) and
//! whose decoder reads a `null` as "leave the field as it is", that is absent. serde refuses a
//! `null` where it expects a list or a map, even with `#[serde(default)]`, so every document
//! that reaches rbuild from outside (image configs, manifests, indexes, `index.json`, registry
//! replies, `~/.docker/config.json`) is read through [`from_slice`], which drops null members
//! first: one rule for every type and field instead of a helper per field. A required member
//! that is null is then missing, and serde says so by name (``missing field `digest` ``).
//!
//! What rbuild writes is unaffected: its types omit empty fields, so it never writes `null`.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Reads `T` from JSON, taking an object member whose value is `null` as absent, at any depth.
/// Unknown members are ignored as `T` ignores them.
///
/// Only object members are dropped: a `null` inside an array stays and is an error where `T`
/// wants a string (Go's encoder never writes one there).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut value: Value = serde_json::from_slice(bytes)?;
    drop_nulls(&mut value);
    serde_json::from_value(value)
}

/// Removes every object member whose value is `null`. The recursion is as deep as the document,
/// which serde_json's parser has already limited (128 levels).
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Inner {
        #[serde(default)]
        list: Vec<String>,
        #[serde(default)]
        map: BTreeMap<String, String>,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        required: u32,
        #[serde(default)]
        inner: Inner,
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[test]
    fn null_members_are_absent_at_any_depth() {
        let outer: Outer = from_slice(
            br#"{"required":1,"inner":{"list":null,"map":null,"name":null},
                 "items":[{"list":null,"map":{"a":"b"}},{"name":"x","map":null}],"unknown":null}"#,
        )
        .unwrap();
        assert_eq!(outer.required, 1);
        assert_eq!(outer.inner, Inner::default());
        assert_eq!(outer.items[0].map["a"], "b");
        assert_eq!(outer.items[1].name.as_deref(), Some("x"));
        assert_eq!(
            from_slice::<Outer>(br#"{"required":2,"inner":null}"#)
                .unwrap()
                .inner,
            Inner::default()
        );
    }

    #[test]
    fn a_null_required_member_is_named_as_missing() {
        let err = from_slice::<Outer>(br#"{"required":null}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `required`"), "{err}");
    }

    #[test]
    fn a_null_array_element_is_still_an_error() {
        assert!(from_slice::<Inner>(br#"{"list":[null]}"#).is_err());
    }

    #[test]
    fn a_null_document_is_an_error() {
        assert!(from_slice::<Outer>(b"null").is_err());
    }
}
