//! Descriptors, image manifests and indexes, and the summary of an uploaded manifest that a
//! registry needs to check it and index it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_type;

/// Points at a piece of content by media type, digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the content is.
    pub media_type: String,
    /// The content's digest.
    pub digest: Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// Other places the content may be fetched from (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The platform an index entry is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type of the manifest this descriptor points at (referrers responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The content itself, base64-encoded, for small blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Descriptor {
    /// A descriptor with only the required fields set.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
            data: None,
        }
    }
}

/// The platform an image runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in Go's naming (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system in Go's naming (`linux`).
    pub os: String,
    /// Operating system version (Windows images).
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Required operating system features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7` for arm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2): a config and an ordered list of layers.
///
/// Read one with [`crate::json::from_slice`], not `serde_json` directly: Go tools write empty
/// fields (`annotations`, a descriptor's `urls`) as `null`, which only that function reads as
/// absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The kind of artifact, when this manifest is not a runnable image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image configuration.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (signatures, SBOMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI) or manifest list (Docker): manifests, usually one per platform.
///
/// Read one with [`crate::json::from_slice`], as [`ImageManifest`] says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The index's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The kind of artifact, when this index is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Why an uploaded manifest is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not a JSON object of a known manifest shape.
    #[error("manifest is not valid: {0}")]
    Invalid(String),
    /// The manifest's media type is not one rbuild stores.
    #[error(
        "unsupported manifest media type {0:?}: expected an OCI image manifest or index, or a Docker schema 2 manifest or manifest list"
    )]
    UnsupportedMediaType(String),
}

/// The fields common to both manifest kinds, read to decide which kind a document is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<serde_json::Value>,
    manifests: Option<serde_json::Value>,
}

/// What a registry needs to know about a manifest it is asked to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestSummary {
    /// The media type the manifest is stored and served with.
    pub media_type: String,
    /// Blobs the manifest references (config and layers) that the repository must hold.
    pub blobs: Vec<Descriptor>,
    /// Manifests an index references, which the repository must hold.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to, for the referrers API.
    pub subject: Option<Descriptor>,
    /// The artifact type shown in referrers responses: `artifactType`, else the config's type.
    pub artifact_type: Option<String>,
    /// The manifest's annotations, shown in referrers responses.
    pub annotations: BTreeMap<String, String>,
}

impl ManifestSummary {
    /// Reads a manifest upload.
    ///
    /// `content_type` is the request's `Content-Type`; it decides the media type when the
    /// document does not name one, and must agree with the document when it does.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ManifestSummary, ManifestError> {
        let probe: Probe = crate::json::from_slice(bytes)
            .map_err(|e| ManifestError::Invalid(format!("not a JSON manifest object: {e}")))?;
        if probe.schema_version != Some(2) {
            return Err(ManifestError::Invalid(format!(
                "schemaVersion must be 2, found {}",
                probe.schema_version.map_or("none".to_owned(), |v| v.to_string())
            )));
        }
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
        let media_type = match (&probe.media_type, content_type) {
            (Some(body), Some(header)) if body != header => {
                return Err(ManifestError::Invalid(format!(
                    "mediaType {body:?} in the manifest does not match Content-Type {header:?}"
                )));
            }
            (Some(body), _) => body.clone(),
            (None, Some(header)) => header.to_owned(),
            (None, None) if probe.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
            (None, None) if probe.config.is_some() => media_type::OCI_MANIFEST.to_owned(),
            (None, None) => {
                return Err(ManifestError::Invalid(
                    "no mediaType, no Content-Type, and neither config nor manifests".to_owned(),
                ));
            }
        };
        if media_type::is_image_manifest(&media_type) {
            let m: ImageManifest = crate::json::from_slice(bytes)
                .map_err(|e| ManifestError::Invalid(format!("image manifest: {e}")))?;
            let artifact_type = m
                .artifact_type
                .clone()
                .or_else(|| Some(m.config.media_type.clone()));
            let blobs = std::iter::once(m.config)
                .chain(m.layers)
                .filter(|d| !media_type::is_foreign_layer(&d.media_type))
                .collect();
            Ok(ManifestSummary {
                media_type,
                blobs,
                manifests: Vec::new(),
                subject: m.subject,
                artifact_type,
                annotations: m.annotations,
            })
        } else if media_type::is_index(&media_type) {
            let i: ImageIndex = crate::json::from_slice(bytes)
                .map_err(|e| ManifestError::Invalid(format!("image index: {e}")))?;
            Ok(ManifestSummary {
                media_type,
                blobs: Vec::new(),
                manifests: i.manifests,
                subject: i.subject,
                artifact_type: i.artifact_type,
                annotations: i.annotations,
            })
        } else {
            Err(ManifestError::UnsupportedMediaType(media_type))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image_manifest(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[{{"mediaType":"{}","digest":"{}","size":3}}]{extra}}}"#,
            media_type::OCI_MANIFEST,
            media_type::OCI_CONFIG,
            digest('a'),
            media_type::OCI_LAYER_GZIP,
            digest('b'),
        )
    }

    #[test]
    fn summarises_an_image_manifest() {
        let s = ManifestSummary::parse(image_manifest("").as_bytes(), None).unwrap();
        assert_eq!(s.media_type, media_type::OCI_MANIFEST);
        assert_eq!(s.blobs.len(), 2);
        assert_eq!(s.artifact_type.as_deref(), Some(media_type::OCI_CONFIG));
        assert!(s.subject.is_none());
    }

    #[test]
    fn reads_subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{}","digest":"{}","size":9}}"#,
            media_type::OCI_MANIFEST,
            digest('c')
        );
        let s = ManifestSummary::parse(image_manifest(&extra).as_bytes(), None).unwrap();
        assert_eq!(s.artifact_type.as_deref(), Some("application/x-sig"));
        assert_eq!(s.subject.unwrap().digest.to_string(), digest('c'));
    }

    #[test]
    fn content_type_must_agree_with_body() {
        let err =
            ManifestSummary::parse(image_manifest("").as_bytes(), Some(media_type::OCI_INDEX)).unwrap_err();
        assert!(err.to_string().contains("does not match"));
        let ok = ManifestSummary::parse(
            image_manifest("").as_bytes(),
            Some(&format!("{}; charset=utf-8", media_type::OCI_MANIFEST)),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn detects_kind_without_media_type() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":1}}]}}"#,
            media_type::OCI_MANIFEST,
            digest('d')
        );
        let s = ManifestSummary::parse(index.as_bytes(), None).unwrap();
        assert_eq!(s.media_type, media_type::OCI_INDEX);
        assert_eq!(s.manifests.len(), 1);
    }

    #[test]
    fn skips_foreign_layers() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[{{"mediaType":"{}","digest":"{}","size":3,"urls":["https://example.com/l"]}}]}}"#,
            media_type::DOCKER_MANIFEST,
            media_type::DOCKER_CONFIG,
            digest('a'),
            media_type::DOCKER_FOREIGN_LAYER,
            digest('b')
        );
        assert_eq!(ManifestSummary::parse(m.as_bytes(), None).unwrap().blobs.len(), 1);
    }

    /// A descriptor with every optional field `null`, its platform's too.
    fn null_descriptor(media: &str, c: char) -> String {
        format!(
            r#"{{"mediaType":"{media}","digest":"{}","size":1,"urls":null,"annotations":null,"artifactType":null,"data":null,
                "platform":{{"architecture":"amd64","os":"linux","os.version":null,"os.features":null,"variant":null}}}}"#,
            digest(c)
        )
    }

    #[test]
    fn null_optional_fields_read_as_absent() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":null,"artifactType":null,"config":{},"layers":[{}],"subject":null,"annotations":null}}"#,
            null_descriptor(media_type::DOCKER_CONFIG, 'a'),
            null_descriptor(media_type::DOCKER_LAYER_GZIP, 'b'),
        );
        let m: ImageManifest = crate::json::from_slice(manifest.as_bytes()).unwrap();
        let platform = Platform {
            architecture: "amd64".to_owned(),
            os: "linux".to_owned(),
            os_version: None,
            os_features: Vec::new(),
            variant: None,
        };
        let mut config = Descriptor::new(media_type::DOCKER_CONFIG, digest('a').parse().unwrap(), 1);
        config.platform = Some(platform.clone());
        let mut layer = Descriptor::new(media_type::DOCKER_LAYER_GZIP, digest('b').parse().unwrap(), 1);
        layer.platform = Some(platform);
        assert_eq!(
            m,
            ImageManifest {
                schema_version: 2,
                media_type: None,
                artifact_type: None,
                config,
                layers: vec![layer.clone()],
                subject: None,
                annotations: BTreeMap::new(),
            }
        );
        let no_layers = manifest.replace(r#""layers":["#, r#""layers":null,"layers_":["#);
        assert!(
            crate::json::from_slice::<ImageManifest>(no_layers.as_bytes())
                .unwrap()
                .layers
                .is_empty()
        );
        let summary = ManifestSummary::parse(manifest.as_bytes(), Some(media_type::DOCKER_MANIFEST)).unwrap();
        assert_eq!(summary.blobs.len(), 2);

        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":null,"artifactType":null,"manifests":[{}],"subject":null,"annotations":null}}"#,
            null_descriptor(media_type::DOCKER_MANIFEST, 'b')
        );
        let i: ImageIndex = crate::json::from_slice(index.as_bytes()).unwrap();
        assert_eq!(
            i.manifests,
            [Descriptor {
                media_type: media_type::DOCKER_MANIFEST.to_owned(),
                ..layer
            }]
        );
        assert!(i.media_type.is_none() && i.subject.is_none() && i.annotations.is_empty());
        let summary =
            ManifestSummary::parse(index.as_bytes(), Some(media_type::DOCKER_MANIFEST_LIST)).unwrap();
        assert_eq!(summary.manifests.len(), 1);
    }

    #[test]
    fn null_required_fields_are_named() {
        let descriptor = null_descriptor(media_type::DOCKER_MANIFEST, 'b');
        for (field, json) in [
            (
                "digest",
                descriptor
                    .replace(&digest('b'), "null")
                    .replace(r#""null""#, "null"),
            ),
            ("size", descriptor.replace(r#""size":1"#, r#""size":null"#)),
            (
                "mediaType",
                descriptor.replace(r#""mediaType":""#, r#""mediaType":null,"x":""#),
            ),
            ("os", descriptor.replace(r#""os":"linux""#, r#""os":null"#)),
        ] {
            let err = crate::json::from_slice::<Descriptor>(json.as_bytes()).unwrap_err();
            assert!(
                err.to_string().contains(&format!("missing field `{field}`")),
                "{json}: {err}"
            );
        }
        let index = r#"{"schemaVersion":2,"manifests":null}"#;
        let err = ManifestSummary::parse(index.as_bytes(), Some(media_type::OCI_INDEX)).unwrap_err();
        assert!(err.to_string().contains("missing field `manifests`"), "{err}");
    }

    #[test]
    fn writes_empty_fields_as_omitted_never_null() {
        let layer = Descriptor::new(media_type::OCI_LAYER_GZIP, digest('b').parse().unwrap(), 3);
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: None,
            artifact_type: None,
            config: Descriptor::new(media_type::OCI_CONFIG, digest('a').parse().unwrap(), 2),
            layers: vec![layer.clone()],
            subject: None,
            annotations: BTreeMap::new(),
        };
        assert_eq!(
            serde_json::to_string(&manifest).unwrap(),
            format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[{{"mediaType":"{}","digest":"{}","size":3}}]}}"#,
                media_type::OCI_CONFIG,
                digest('a'),
                media_type::OCI_LAYER_GZIP,
                digest('b')
            )
        );
        let index = ImageIndex {
            schema_version: 2,
            media_type: None,
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
        };
        assert_eq!(
            serde_json::to_string(&index).unwrap(),
            r#"{"schemaVersion":2,"manifests":[]}"#
        );
    }

    #[test]
    fn rejects_invalid_manifests() {
        let cases = [
            "",
            "[]",
            "{}",
            r#"{"schemaVersion":1}"#,
            r#"{"schemaVersion":2}"#,
            r#"{"schemaVersion":2,"mediaType":"text/plain","config":{}}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
            r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#,
        ];
        for c in cases {
            assert!(ManifestSummary::parse(c.as_bytes(), None).is_err(), "{c}");
        }
    }
}
