//! Build caches that travel between machines: `--cache-to` writes a build's step records and
//! their layers as an OCI artifact ([`format`]) to a registry or an OCI layout directory, and
//! `--cache-from` reads them back, so a CI runner that starts empty finds its steps cached.
//!
//! Import is lazy: only the manifest and the config are read. A layer is fetched when a later
//! step needs the files below it ([`RemoteCaches::fetch_missing`]) or an output needs its
//! bytes — never when the image is pushed to a registry that has the blob or can mount it.
//! A cache is trusted like a base image, and a broken one never breaks a build: what cannot
//! be read is a warning naming the cache, and the steps are built.

mod export;
pub mod format;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use rbuild_layer::{Compression, DEFAULT_ZSTD_LEVEL};
use rbuild_oci::config::ImageConfig;
use rbuild_oci::{ContentStore, Descriptor, Digest, Reference, media_type};

pub use export::{ExportedCache, StepRecord, WrittenCache, inline, write};
use format::{CacheConfig, FormatError, InlineCache};

use crate::cache::CacheRecord;
use rbuild_oci::report::chain;

use crate::error::{BuildError, Result};
use crate::remote::Remote;
use crate::store::LocalStore;

/// Where a cache is (`--cache-from`, and the destination of `--cache-to`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLocation {
    /// A registry reference (`type=registry,ref=…`, or a plain reference).
    Registry(Reference),
    /// An OCI image layout directory, and the tag of the cache in it (`type=local`).
    Local {
        /// The directory.
        dir: PathBuf,
        /// The tag (`latest` unless given).
        tag: String,
    },
}

impl CacheLocation {
    /// The registry a cache is on: an image pushed there can mount the layers the cache gave
    /// instead of needing their bytes.
    pub fn registry(&self) -> Option<&str> {
        match self {
            CacheLocation::Registry(reference) => Some(reference.registry()),
            CacheLocation::Local { .. } => None,
        }
    }
}

impl fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheLocation::Registry(reference) => write!(f, "{reference}"),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// What a cache export holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The steps whose results are in the image (BuildKit's default).
    #[default]
    Min,
    /// Every step of every stage built.
    Max,
}

/// A `--cache-to`: a cache of its own somewhere, or records inside the image pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheTo {
    /// `type=registry` or `type=local`.
    Export(CacheTarget),
    /// `type=inline`: the records of the image's own steps in its config ([`inline`]).
    Inline,
}

impl FromStr for CacheTo {
    type Err = String;

    fn from_str(spec: &str) -> std::result::Result<CacheTo, String> {
        match fields(spec)?.get("type") {
            Some(&"inline") => Ok(CacheTo::Inline),
            _ => spec.parse().map(CacheTo::Export),
        }
    }
}

/// A `--cache-to` that writes a cache of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheTarget {
    /// Where.
    pub location: CacheLocation,
    /// What.
    pub mode: Mode,
    /// A failed export warns instead of failing the build (`ignore-error=true`).
    pub ignore_error: bool,
    /// How the cache's layers that are not the image's own are stored (`compression=gzip|zstd`);
    /// `None`: as they were built. The image's layers stay the image's blobs whatever this says.
    pub compression: Option<Compression>,
}

/// The `key=value` fields of a `--cache-from`/`--cache-to` value.
fn fields(spec: &str) -> std::result::Result<HashMap<&str, &str>, String> {
    spec.split(',')
        .map(|field| {
            field
                .split_once('=')
                .ok_or_else(|| format!("{spec:?}: {field:?} is not key=value"))
        })
        .collect()
}

fn location(
    spec: &str,
    fields: &HashMap<&str, &str>,
    dir_key: &str,
) -> std::result::Result<CacheLocation, String> {
    match fields.get("type").copied().unwrap_or("registry") {
        "registry" => {
            let reference = fields
                .get("ref")
                .ok_or_else(|| format!("{spec:?}: type=registry needs ref=REFERENCE"))?;
            reference
                .parse()
                .map(CacheLocation::Registry)
                .map_err(|e| format!("{spec:?}: {e}"))
        }
        "local" => {
            let dir = fields
                .get(dir_key)
                .ok_or_else(|| format!("{spec:?}: type=local needs {dir_key}=DIRECTORY"))?;
            Ok(CacheLocation::Local {
                dir: PathBuf::from(dir),
                tag: fields.get("tag").unwrap_or(&"latest").to_string(),
            })
        }
        other => Err(format!(
            "{spec:?}: cache type {other} is not supported; use type=registry or type=local"
        )),
    }
}

impl FromStr for CacheLocation {
    type Err = String;

    /// A `--cache-from`: `type=registry,ref=REF`, `type=local,src=DIR[,tag=TAG]`, or a plain
    /// image reference.
    fn from_str(spec: &str) -> std::result::Result<CacheLocation, String> {
        if !spec.contains('=') {
            return spec
                .parse()
                .map(CacheLocation::Registry)
                .map_err(|e| format!("{spec:?}: {e}"));
        }
        location(spec, &fields(spec)?, "src")
    }
}

impl FromStr for CacheTarget {
    type Err = String;

    /// A `--cache-to`: `type=registry,ref=REF` or `type=local,dest=DIR[,tag=TAG]`, with
    /// `mode=min|max`, `compression=gzip|zstd` and `ignore-error=true|false`.
    fn from_str(spec: &str) -> std::result::Result<CacheTarget, String> {
        let fields = fields(spec)?;
        let mode = match fields.get("mode").copied() {
            None | Some("min") => Mode::Min,
            Some("max") => Mode::Max,
            Some(other) => return Err(format!("{spec:?}: mode={other}: use min or max")),
        };
        let ignore_error = match fields.get("ignore-error").copied() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("{spec:?}: ignore-error={other}: use true or false")),
        };
        let compression = match fields.get("compression").copied() {
            None => None,
            Some("gzip") => Some(Compression::default()),
            Some("zstd") => Some(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            }),
            Some(other) => return Err(format!("{spec:?}: compression={other}: use gzip or zstd")),
        };
        Ok(CacheTarget {
            location: location(spec, &fields, "dest")?,
            mode,
            ignore_error,
            compression,
        })
    }
}

/// A cache read at the start of a build.
struct Imported {
    location: CacheLocation,
    hits: HashMap<Digest, CacheRecord>,
}

/// The caches a build reads, in the order given: the first that has a key answers.
#[derive(Default)]
pub struct RemoteCaches {
    imported: Vec<Imported>,
    /// Layers that could not be fetched when a step needed their files: the records naming
    /// them no longer answer, so the build started again builds those steps.
    lost: Mutex<Vec<LostLayer>>,
}

/// A layer a cache listed and could not give.
#[derive(Clone, Debug)]
pub struct LostLayer {
    /// The cache.
    pub cache: String,
    /// The layer.
    pub layer: Digest,
    /// Why it could not be fetched.
    pub why: String,
}

impl fmt::Display for LostLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let LostLayer { cache, layer, why } = self;
        write!(f, "cache {cache}: layer {layer} could not be fetched ({why})")
    }
}

impl RemoteCaches {
    /// Reads the manifest and config of each cache; one that cannot be read adds a warning.
    pub async fn load(
        locations: &[CacheLocation],
        remote: &dyn Remote,
        store: &LocalStore,
    ) -> (RemoteCaches, Vec<String>) {
        let mut imported = Vec::new();
        let mut warnings = Vec::new();
        for location in locations {
            match read(location, remote).await {
                Ok((hits, dropped)) => {
                    warnings.extend(dropped);
                    if let CacheLocation::Registry(reference) = location {
                        record_origins(store, reference, &hits);
                    }
                    imported.push(Imported {
                        location: location.clone(),
                        hits,
                    });
                }
                Err(BuildError::Cache { source, .. }) => {
                    warnings.push(format!("cache {location} is not used: {}", chain(&source)));
                }
                Err(e) => warnings.push(format!("cache {location} is not used: {}", chain(&e))),
            }
        }
        let caches = RemoteCaches {
            imported,
            lost: Mutex::default(),
        };
        (caches, warnings)
    }

    /// The result a cache has for `key`, and which cache; none whose layer was lost.
    pub fn lookup(&self, key: &Digest) -> Option<(&CacheRecord, &CacheLocation)> {
        let lost = self.lost.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let usable = |hit: &&CacheRecord| {
            hit.layer
                .as_ref()
                .is_none_or(|l| lost.iter().all(|lost| lost.layer != l.descriptor.digest))
        };
        self.imported.iter().find_map(|cache| {
            let hit = cache.hits.get(key).filter(usable)?;
            Some((hit, &cache.location))
        })
    }

    /// The layers lost so far, in the order they were: a build that failed while this grew
    /// can start again and build what they held.
    pub fn lost(&self) -> Vec<LostLayer> {
        self.lost
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts the `layers` that the store lacks into it, from the caches that have them; returns
    /// the bytes fetched. Layers no cache has are left to whoever needs them to say so. A
    /// layer that cannot be fetched is lost (see [`RemoteCaches::lost`]) and the error says
    /// which ([`BuildError::CacheLayerLost`]).
    pub async fn fetch_missing(
        &self,
        layers: &[Descriptor],
        store: &LocalStore,
        remote: &dyn Remote,
    ) -> Result<u64> {
        let mut fetched = 0;
        for cache in &self.imported {
            let has = |d: &Descriptor| {
                cache
                    .hits
                    .values()
                    .any(|h| h.layer.as_ref().is_some_and(|l| &l.descriptor == d))
            };
            let wanted: Vec<Descriptor> = layers
                .iter()
                .filter(|d| !store.content.contains(&d.digest) && has(d))
                .cloned()
                .collect();
            if wanted.is_empty() {
                continue;
            }
            fetched += wanted.iter().map(|d| d.size).sum::<u64>();
            if let Err(source) = fetch(&cache.location, &wanted, store, remote).await {
                let gone = wanted.into_iter().map(|d| d.digest);
                let gone: Vec<Digest> = gone.filter(|d| !store.content.contains(d)).collect();
                let Some(layer) = gone.first().cloned() else {
                    return Err(source);
                };
                let why = chain(&source);
                let mut lost = self.lost.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                lost.extend(gone.into_iter().map(|layer| LostLayer {
                    cache: cache.location.to_string(),
                    layer,
                    why: why.clone(),
                }));
                return Err(BuildError::CacheLayerLost {
                    cache: cache.location.to_string(),
                    layer,
                    source: Box::new(source),
                });
            }
        }
        Ok(fetched)
    }
}

/// Copies `wanted` from the cache at `location` into the store, each checked against its digest.
async fn fetch(
    location: &CacheLocation,
    wanted: &[Descriptor],
    store: &LocalStore,
    remote: &dyn Remote,
) -> Result<()> {
    match location {
        CacheLocation::Registry(reference) => remote.fetch_blobs(reference, wanted, &store.content).await,
        CacheLocation::Local { dir, .. } => {
            let layout = open_layout(dir)?;
            for descriptor in wanted {
                let digest = &descriptor.digest;
                store.content.import_file(&layout.blob_path(digest), digest)?;
            }
            Ok(())
        }
    }
}

/// Reads a cache's records; warns of those it drops.
async fn read(
    location: &CacheLocation,
    remote: &dyn Remote,
) -> Result<(HashMap<Digest, CacheRecord>, Vec<String>)> {
    let invalid = |source| BuildError::Cache {
        cache: location.to_string(),
        source,
    };
    let mut warnings = Vec::new();
    let hits = match location {
        // The client verifies what it fetches against the digests. An image is read for its
        // inline cache.
        CacheLocation::Registry(reference) => {
            let artifact = remote.fetch_artifact(reference).await?;
            let config_type = artifact.manifest.config.media_type.as_str();
            let mut hits =
                if config_type == media_type::OCI_CONFIG || config_type == media_type::DOCKER_CONFIG {
                    let config: ImageConfig =
                        rbuild_oci::json::from_slice(&artifact.config).map_err(|source| {
                            BuildError::Document {
                                image: location.to_string(),
                                document: "image config",
                                source,
                            }
                        })?;
                    InlineCache::read(&config, &artifact.manifest)
                        .unwrap_or(Err(FormatError::NoInlineCache))
                        .map_err(invalid)?
                } else {
                    CacheConfig::read(&artifact.config, &artifact.manifest).map_err(invalid)?
                };
            // A registry may lose a blob after the manifest naming it was written (deleted,
            // garbage-collected): the records using it are dropped before anything hits them.
            let mut layers: Vec<Descriptor> = Vec::new();
            for layer in hits.values().filter_map(|h| h.layer.as_ref()) {
                if !layers.contains(&layer.descriptor) {
                    layers.push(layer.descriptor.clone());
                }
            }
            let missing = remote.missing_blobs(reference, &layers).await?;
            drop_missing(&mut hits, location, &mut warnings, |d| {
                missing.iter().any(|m| m.digest == d.digest)
            });
            hits
        }
        CacheLocation::Local { dir, tag } => {
            let layout = open_layout(dir)?;
            let descriptor = layout
                .resolve_ref(tag)?
                .ok_or_else(|| BuildError::LayoutTagNotFound {
                    layout: dir.display().to_string(),
                    tag: Some(tag.clone()),
                })?;
            let manifest_bytes = verified(&layout, &descriptor.digest, "manifest").map_err(invalid)?;
            let manifest =
                rbuild_oci::json::from_slice(&manifest_bytes).map_err(|source| BuildError::Document {
                    image: location.to_string(),
                    document: "cache manifest",
                    source,
                })?;
            let config = verified(&layout, &manifest_config(&manifest), "config").map_err(invalid)?;
            let mut hits = CacheConfig::read(&config, &manifest).map_err(invalid)?;
            drop_missing(&mut hits, location, &mut warnings, |d| {
                layout.size(&d.digest) != Some(d.size)
            });
            hits
        }
    };
    Ok((hits, warnings))
}

/// Drops the records whose layer the cache lost or holds at another size (`missing` says
/// which), each with a warning naming the cache, the layer and the step: those steps are built.
fn drop_missing(
    hits: &mut HashMap<Digest, CacheRecord>,
    location: &CacheLocation,
    warnings: &mut Vec<String>,
    missing: impl Fn(&Descriptor) -> bool,
) {
    hits.retain(|key, record| match &record.layer {
        Some(layer) if missing(&layer.descriptor) => {
            warnings.push(format!(
                "cache {location}: layer {} of step {key} is missing or damaged; the step is built",
                layer.descriptor.digest
            ));
            false
        }
        _ => true,
    });
}

/// A blob of a layout directory, checked against its digest.
fn verified(
    layout: &ContentStore,
    digest: &Digest,
    document: &'static str,
) -> std::result::Result<Vec<u8>, FormatError> {
    let bytes = layout
        .read(digest)
        .map_err(|_| FormatError::Missing { document })?;
    let actual = Digest::of(digest.algorithm(), &bytes);
    match &actual == digest {
        true => Ok(bytes),
        false => Err(FormatError::Digest {
            document,
            expected: digest.clone(),
            actual,
        }),
    }
}

fn manifest_config(manifest: &rbuild_oci::manifest::ImageManifest) -> Digest {
    manifest.config.digest.clone()
}

/// An OCI layout directory that exists (opening one never creates it here).
fn open_layout(dir: &std::path::Path) -> Result<ContentStore> {
    if !dir.join("index.json").is_file() {
        return Err(BuildError::io(
            format!("reading the cache at {}", dir.display()),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no OCI layout (index.json) there"),
        ));
    }
    Ok(ContentStore::open(dir)?)
}

/// Records that the cache's layers are in its repository, so that pushing an image that uses
/// them to that registry mounts them instead of needing their bytes.
fn record_origins(store: &LocalStore, reference: &Reference, hits: &HashMap<Digest, CacheRecord>) {
    let origin = rbuild_oci::BlobOrigin {
        registry: reference.registry().to_owned(),
        repository: reference.repository().clone(),
    };
    let layers = hits
        .values()
        .filter_map(|h| h.layer.as_ref())
        .map(|l| &l.descriptor.digest);
    if let Err(e) = store.content.add_origin(layers, &origin) {
        tracing::warn!("recording where the blobs of cache {reference} are: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_values_parse_like_buildx() {
        let from: CacheLocation = "type=registry,ref=127.0.0.1:5000/app:cache".parse().unwrap();
        assert_eq!(from.to_string(), "127.0.0.1:5000/app:cache");
        let plain: CacheLocation = "127.0.0.1:5000/app:main".parse().unwrap();
        assert!(matches!(plain, CacheLocation::Registry(_)));
        let local: CacheLocation = "type=local,src=/tmp/cache".parse().unwrap();
        assert_eq!(
            local,
            CacheLocation::Local {
                dir: "/tmp/cache".into(),
                tag: "latest".into()
            }
        );
        let to: CacheTarget = "type=local,dest=/tmp/c,mode=max,ignore-error=true,tag=v1"
            .parse()
            .unwrap();
        assert_eq!(to.mode, Mode::Max);
        assert!(to.ignore_error);
        assert_eq!(to.location.to_string(), "/tmp/c:v1");
        let min: CacheTarget = "type=registry,ref=r.test/a:c".parse().unwrap();
        assert_eq!(
            (min.mode, min.ignore_error, min.compression),
            (Mode::Min, false, None)
        );
        let zstd: CacheTarget = "type=registry,ref=r.test/a:c,compression=zstd".parse().unwrap();
        assert_eq!(
            zstd.compression.map(Compression::media_type),
            Some(media_type::OCI_LAYER_ZSTD)
        );
        let gzip: CacheTarget = "type=local,dest=/tmp/c,compression=gzip".parse().unwrap();
        assert_eq!(
            gzip.compression.map(Compression::media_type),
            Some(media_type::OCI_LAYER_GZIP)
        );
        for bad in [
            "type=gha",
            "type=registry",
            "type=local",
            "type=registry,ref=r.test/a,mode=all",
            "type=registry,ref=r.test/a,ignore-error=maybe",
            "type=registry,ref=r.test/a,compression=lz4",
            "type=registry,oops",
        ] {
            assert!(bad.parse::<CacheTarget>().is_err(), "{bad}");
        }
    }
}
