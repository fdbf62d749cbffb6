//! The resolved build as `docker buildx bake --print` shows it: `{"group": {...}, "target":
//! {...}}` with buildx's attribute names, empty attributes left out.

use serde_json::{Map, Value, json};

use crate::Bake;
use crate::target::Target;

impl Bake {
    /// The build as JSON, in the shape of `docker buildx bake --print`.
    pub fn to_json(&self) -> Value {
        let groups: Map<String, Value> = self
            .groups
            .iter()
            .map(|(name, targets)| (name.clone(), json!({ "targets": targets })))
            .collect();
        let targets: Map<String, Value> = self.targets.iter().map(|t| (t.name.clone(), target(t))).collect();
        json!({ "group": groups, "target": targets })
    }
}

fn target(t: &Target) -> Value {
    let mut out = Map::new();
    let mut put = |key: &str, value: Value| {
        let empty = match &value {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Bool(b) => !b,
            _ => false,
        };
        if !empty {
            out.insert(key.to_owned(), value);
        }
    };
    let strings = |items: &mut dyn Iterator<Item = String>| Value::from(items.collect::<Vec<_>>());
    put("context", t.context.display().to_string().into());
    put("dockerfile", t.dockerfile.display().to_string().into());
    put("dockerfile-inline", t.dockerfile_inline.clone().into());
    put("args", json!(t.args));
    put("labels", json!(t.labels));
    put("tags", json!(t.tags));
    put("target", t.target.clone().into());
    let contexts: Map<String, Value> = t
        .contexts
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string().into()))
        .collect();
    put("contexts", contexts.into());
    put("secret", strings(&mut t.secrets.iter().map(ToString::to_string)));
    put("ssh", json!(t.ssh));
    put("cache-from", json!(t.cache_from));
    put("cache-to", json!(t.cache_to));
    put("platforms", json!(t.platforms));
    put("output", json!(t.outputs));
    put("network", t.network.clone().into());
    put("no-cache", t.no_cache.into());
    put("no-cache-filter", json!(t.no_cache_filter));
    put("pull", t.pull.into());
    Value::Object(out)
}
