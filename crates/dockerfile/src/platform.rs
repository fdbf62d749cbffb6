//! Platform specifiers (`linux/arm64/v8`) parsed and normalised as
//! containerd's `platforms.Parse` does, so `$TARGETARCH` and friends get
//! the values `docker build` gives them.

use serde::Serialize;

/// An OS/architecture/variant triple.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// `v7`, `v8`, or empty.
    pub variant: String,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

const KNOWN_OS: [&str; 17] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

const KNOWN_ARCH: [&str; 25] = [
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
    "x86_64",
];

impl Platform {
    /// Parses `os[/arch[/variant]]` or a bare architecture.
    pub fn parse(spec: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = spec.split('/').collect();
        for p in &parts {
            let ok = !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(format!("{spec:?}: invalid platform specifier"));
            }
        }
        let (os, arch, variant) = match parts.as_slice() {
            [one] => {
                let lower = one.to_lowercase();
                if KNOWN_OS.contains(&normalize_os(&lower).as_str()) {
                    (normalize_os(&lower), "amd64".to_string(), String::new())
                } else if KNOWN_ARCH.contains(&lower.as_str()) || lower == "aarch64" {
                    ("linux".to_string(), lower, String::new())
                } else {
                    return Err(format!(
                        "{spec:?}: unknown operating system or architecture: use os/arch, e.g. linux/amd64"
                    ));
                }
            }
            [os, arch] => (
                normalize_os(&os.to_lowercase()),
                arch.to_lowercase(),
                String::new(),
            ),
            [os, arch, variant] => (
                normalize_os(&os.to_lowercase()),
                arch.to_lowercase(),
                variant.to_lowercase(),
            ),
            _ => return Err(format!("{spec:?}: too many parts in platform specifier")),
        };
        let (architecture, variant) = normalize_arch(&arch, &variant);
        Ok(Platform {
            os,
            architecture,
            variant,
        })
    }
}

fn normalize_os(os: &str) -> String {
    match os {
        "macos" => "darwin".to_string(),
        other => other.to_string(),
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    match (arch, variant) {
        ("i386", _) => ("386".into(), String::new()),
        ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64".into(), String::new()),
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64".into(), v.into()),
        ("aarch64" | "arm64", "8" | "v8" | "v8.0") => ("arm64".into(), String::new()),
        ("aarch64" | "arm64", v) => ("arm64".into(), v.into()),
        ("armhf", _) => ("arm".into(), "v7".into()),
        ("armel", _) => ("arm".into(), "v6".into()),
        ("arm", "" | "7") => ("arm".into(), "v7".into()),
        ("arm", v @ ("5" | "6" | "8")) => ("arm".into(), format!("v{v}")),
        (a, v) => (a.into(), v.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Platform::parse(s).map(|p| p.to_string()).unwrap_or_else(|e| e)
    }

    #[test]
    fn normalisation() {
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/v6"), "linux/arm/v6");
        assert_eq!(p("Linux/AMD64"), "linux/amd64");
        assert_eq!(p("arm64"), "linux/arm64");
        assert_eq!(p("windows"), "windows/amd64");
        assert_eq!(p("linux/riscv64"), "linux/riscv64");
    }

    #[test]
    fn errors() {
        assert!(Platform::parse("").is_err());
        assert!(Platform::parse("nope").is_err());
        assert!(Platform::parse("linux/amd64/v1/x").is_err());
        assert!(Platform::parse("linux/$x").is_err());
    }
}
