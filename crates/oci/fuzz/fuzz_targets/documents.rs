//! Any bytes as an image config, image manifest, image index and manifest upload: reading
//! returns, never panics, and accepts at least what a strict `serde_json` reading accepts, to
//! the same value. For a JSON document, object members in turn (up to eight, spread over the
//! document) are set to `null` and, separately, left out: both read the same (Go's decoders,
//! which wrote most documents in the wild, take a `null` as absent), so whatever reads without
//! an optional member still reads with it `null`. Whatever reads is written back without any
//! `null`, and what rbuild writes reads back equal through the strict reader.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use rbuild_oci::ManifestSummary;
use rbuild_oci::config::ImageConfig;
use rbuild_oci::json;
use rbuild_oci::manifest::{ImageIndex, ImageManifest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Members nulled per input, so that a large document still runs quickly.
const MAX_MEMBERS: usize = 8;

/// One step from a JSON value to a value inside it.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The path of every object member under `value`, outermost first.
fn members(value: &Value, path: &mut Vec<Step>, found: &mut Vec<Vec<Step>>) {
    let children: Vec<(Step, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (Step::Index(i), v))
            .collect(),
        _ => return,
    };
    for (step, child) in children {
        let is_member = matches!(step, Step::Key(_));
        path.push(step);
        if is_member {
            found.push(path.clone());
        }
        members(child, path, found);
        path.pop();
    }
}

/// `document` with the member at `path` set to `null`, and with it left out, as JSON text.
fn variants(document: &Value, path: &[Step]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (Step::Key(key), parents) = path.split_last()? else {
        return None;
    };
    let mut nulled = document.clone();
    let mut removed = document.clone();
    *object_at(&mut nulled, parents)?.get_mut(key)? = Value::Null;
    object_at(&mut removed, parents)?.remove(key)?;
    Some((
        serde_json::to_vec(&nulled).ok()?,
        serde_json::to_vec(&removed).ok()?,
    ))
}

fn object_at<'a>(mut value: &'a mut Value, path: &[Step]) -> Option<&'a mut serde_json::Map<String, Value>> {
    for step in path {
        value = match step {
            Step::Key(k) => value.get_mut(k.as_str())?,
            Step::Index(i) => value.get_mut(*i)?,
        };
    }
    value.as_object_mut()
}

/// Reads `bytes` as rbuild reads others' documents; where a strict reading succeeds, it agrees.
fn read<T: DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) -> Result<T, String> {
    let lenient = json::from_slice(bytes).map_err(|e| e.to_string());
    if let Ok(strict) = serde_json::from_slice::<T>(bytes) {
        assert_eq!(
            lenient.as_ref(),
            Ok(&strict),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
    lenient
}

/// Reads `bytes` as `T`; what reads is written without `null` and reads back equal.
fn read_and_write_back<T>(bytes: &[u8]) -> Result<T, String>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let value = read::<T>(bytes)?;
    let written = serde_json::to_vec(&value).expect("a parsed document serializes");
    assert!(
        !has_null(&serde_json::from_slice(&written).expect("rbuild writes JSON")),
        "{} written with null",
        String::from_utf8_lossy(&written)
    );
    let strict: T = serde_json::from_slice(&written).expect("what rbuild writes reads back");
    assert_eq!(strict, value, "{}", String::from_utf8_lossy(&written));
    Ok(value)
}

fn has_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.iter().any(has_null),
        Value::Object(map) => map.values().any(has_null),
        _ => false,
    }
}

/// Every reader of others' documents, on `bytes`.
fn read_all(bytes: &[u8]) {
    let _ = read_and_write_back::<ImageConfig>(bytes);
    let _ = read_and_write_back::<ImageManifest>(bytes);
    let _ = read_and_write_back::<ImageIndex>(bytes);
    let _ = ManifestSummary::parse(bytes, None);
}

/// `null` and absent read the same, for every reader.
fn same_reading(nulled: &[u8], removed: &[u8]) {
    assert_eq!(read::<ImageConfig>(nulled), read::<ImageConfig>(removed));
    assert_eq!(read::<ImageManifest>(nulled), read::<ImageManifest>(removed));
    assert_eq!(read::<ImageIndex>(nulled), read::<ImageIndex>(removed));
    let summary = |bytes| ManifestSummary::parse(bytes, None).map_err(|e| e.to_string());
    assert_eq!(summary(nulled), summary(removed));
}

fuzz_target!(|data: &[u8]| {
    read_all(data);
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut found = Vec::new();
    members(&document, &mut Vec::new(), &mut found);
    for path in found.iter().step_by(found.len().div_ceil(MAX_MEMBERS).max(1)) {
        if let Some((nulled, removed)) = variants(&document, path) {
            same_reading(&nulled, &removed);
        }
    }
});
