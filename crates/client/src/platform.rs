//! Choosing the manifest for a platform from an image index, the way containerd does.
//!
//! Platforms are compared after normalisation: architecture aliases (`x86_64` → `amd64`,
//! `aarch64` → `arm64`), default variants (`arm64` is `v8`, `arm` is `v7`, `amd64` is `v1`),
//! and lower-case OS names. An exact variant is preferred; failing that, an older variant the
//! requested CPU can run (`arm/v7` runs `arm/v6`, `amd64/v3` runs `amd64/v2`).

use rbuild_oci::Descriptor;
use rbuild_oci::manifest::Platform;

/// Why a platform string is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8")]
pub struct PlatformError(pub String);

/// A platform with only os, architecture and variant set.
pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
    Platform {
        architecture: architecture.to_owned(),
        os: os.to_owned(),
        os_version: None,
        os_features: Vec::new(),
        variant: variant.map(str::to_owned),
    }
}

/// Parses `os/arch[/variant]` (as `--platform` takes it), normalising aliases.
pub fn parse(s: &str) -> Result<Platform, PlatformError> {
    let parts: Vec<&str> = s.trim().split('/').collect();
    let valid = |p: &&str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    match parts.as_slice() {
        [os, arch] if valid(os) && valid(arch) => Ok(normalize(&new(os, arch, None))),
        [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
            Ok(normalize(&new(os, arch, Some(variant))))
        }
        _ => Err(PlatformError(s.to_owned())),
    }
}

/// The platform of the machine rbuild runs on (`linux/<arch>`).
pub fn host() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    };
    normalize(&new("linux", arch, None))
}

/// `os/arch[/variant]`.
pub fn display(platform: &Platform) -> String {
    match &platform.variant {
        Some(variant) => format!("{}/{}/{}", platform.os, platform.architecture, variant),
        None => format!("{}/{}", platform.os, platform.architecture),
    }
}

/// Normalises the architecture name and the variant (containerd's `platforms.Normalize`).
/// The variant is left out where it is the architecture's default, so `linux/arm64/v8`
/// normalises to `linux/arm64`.
pub fn normalize(platform: &Platform) -> Platform {
    let os = platform.os.to_ascii_lowercase();
    let os = if os == "macos" { "darwin".to_owned() } else { os };
    let arch = platform.architecture.to_ascii_lowercase();
    let variant = platform.variant.as_deref().map(str::to_ascii_lowercase);
    let (architecture, variant) = match (arch.as_str(), variant.as_deref()) {
        ("i386" | "i686", _) => ("386", None),
        ("x86_64" | "x86-64" | "amd64", None | Some("v1")) => ("amd64", None),
        ("x86_64" | "x86-64" | "amd64", Some(v)) => ("amd64", Some(v.to_owned())),
        ("aarch64" | "arm64", None | Some("v8" | "8")) => ("arm64", None),
        ("aarch64" | "arm64", Some(v)) => ("arm64", Some(v.to_owned())),
        ("armhf", _) => ("arm", Some("v7".to_owned())),
        ("armel", _) => ("arm", Some("v6".to_owned())),
        ("arm", None | Some("7" | "v7")) => ("arm", Some("v7".to_owned())),
        ("arm", Some("5" | "v5")) => ("arm", Some("v5".to_owned())),
        ("arm", Some("6" | "v6")) => ("arm", Some("v6".to_owned())),
        ("arm", Some("8" | "v8")) => ("arm", Some("v8".to_owned())),
        (other, v) => (other, v.map(str::to_owned)),
    };
    Platform {
        architecture: architecture.to_owned(),
        os,
        os_version: platform.os_version.clone(),
        os_features: platform.os_features.clone(),
        variant,
    }
}

/// How well `candidate` suits `wanted`: `None` if it cannot run there, else a rank (lower is
/// better; 0 is an exact match).
pub fn rank(wanted: &Platform, candidate: &Platform) -> Option<u32> {
    let (w, c) = (normalize(wanted), normalize(candidate));
    if w.os != c.os || w.architecture != c.architecture {
        return None;
    }
    if w.variant == c.variant {
        return Some(0);
    }
    // An older variant of the same family runs on a newer CPU.
    let level = |v: &Option<String>, default: u32| -> Option<u32> {
        match v {
            None => Some(default),
            Some(v) => v.strip_prefix('v').unwrap_or(v).parse().ok(),
        }
    };
    let default = match w.architecture.as_str() {
        "arm" => 7,
        "arm64" => 8,
        "amd64" => 1,
        _ => return None,
    };
    let (want, have) = (level(&w.variant, default)?, level(&c.variant, default)?);
    (have < want).then(|| want - have)
}

/// The descriptor in an index's `manifests` that best suits `wanted`, skipping entries without a
/// platform (attestations and other artifacts).
pub fn select<'a>(wanted: &Platform, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
    manifests
        .iter()
        .filter_map(|d| Some((rank(wanted, d.platform.as_ref()?)?, d)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_oci::Digest;

    fn entry(platform: &str, n: u8) -> Descriptor {
        let mut d = Descriptor::new(rbuild_oci::media_type::OCI_MANIFEST, Digest::sha256_of(&[n]), 1);
        let parts: Vec<&str> = platform.split('/').collect();
        d.platform = Some(new(parts[0], parts[1], parts.get(2).copied()));
        d
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(display(&parse("linux/amd64").unwrap()), "linux/amd64");
        assert_eq!(display(&parse("linux/x86_64").unwrap()), "linux/amd64");
        assert_eq!(display(&parse("linux/arm64/v8").unwrap()), "linux/arm64");
        assert_eq!(display(&parse("linux/aarch64").unwrap()), "linux/arm64");
        assert_eq!(display(&parse("linux/arm").unwrap()), "linux/arm/v7");
        assert_eq!(display(&parse("Linux/armhf").unwrap()), "linux/arm/v7");
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(host().os, "linux");
    }

    #[test]
    fn selects_like_containerd() {
        let index = [
            entry("linux/arm/v6", 1),
            entry("linux/arm64/v8", 2),
            entry("linux/amd64", 3),
            entry("unknown/unknown", 4),
            entry("linux/arm/v7", 5),
            entry("windows/amd64", 6),
        ];
        let pick = |p: &str| select(&parse(p).unwrap(), &index).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64"), Some(index[2].digest.clone()));
        assert_eq!(pick("linux/arm64"), Some(index[1].digest.clone()));
        assert_eq!(pick("linux/arm64/v8"), Some(index[1].digest.clone()));
        assert_eq!(pick("linux/arm/v7"), Some(index[4].digest.clone()));
        assert_eq!(pick("linux/arm/v6"), Some(index[0].digest.clone()));
        assert_eq!(pick("linux/amd64/v3"), Some(index[2].digest.clone()));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        // arm/v8 falls back to v7, the closest older variant.
        assert_eq!(pick("linux/arm/v8"), Some(index[4].digest.clone()));
    }
}
