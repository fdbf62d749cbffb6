//! `RUN --mount` and `RUN --device` values: CSV fields parsed as BuildKit's
//! `commands_runmount.go` / `commands_rundevice.go` read them.

use serde::Serialize;

/// Splits a CSV record (Go `encoding/csv` rules: `"` quotes a whole field,
/// `""` inside quotes is a literal quote).
pub(crate) fn csv_fields(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("extraneous or missing \" in quoted-field: {value}")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err(format!("extraneous or missing \" in quoted-field: {value}")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err(format!("bare \" in non-quoted-field: {value}")),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// The parse-time check BuildKit makes before any expansion: the CSV must be
/// well formed and `from=` cannot use variables.
pub(crate) fn check_mount_syntax(value: &str) -> Result<(), String> {
    let fields = csv_fields(value).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    for field in fields {
        if let Some((key, v)) = field.split_once('=') {
            let dollar = v.find('$');
            if key.eq_ignore_ascii_case("from") && dollar.is_some_and(|i| i != v.len() - 1) {
                return Err(
                    "'from' doesn't support variable expansion, define alias stage instead".to_string(),
                );
            }
        }
    }
    Ok(())
}

/// `--mount` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A read-only (by default) view of the context or another stage.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty in-memory file system.
    Tmpfs,
    /// A secret file or environment variable.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// Cache mount sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Concurrent writers share the directory.
    Shared,
    /// Each concurrent writer gets its own copy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// A mount as written, after expansion, with BuildKit's defaults applied
/// where they do not depend on the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawMount {
    pub kind: MountType,
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: bool,
    pub size: Option<i64>,
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub required: bool,
    pub env: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Parses a `--mount` value, expanding each field's value with `expand`.
pub(crate) fn parse_mount(
    value: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<RawMount, String> {
    let fields = csv_fields(value).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut m = RawMount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        read_only: false,
        size: None,
        id: None,
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut ro_auto = true;
    let bad_value = |key: &str, v: &str| format!("invalid value for {key}: {v}");
    for field in fields {
        let Some((key, raw)) = field.split_once('=') else {
            match field.to_lowercase().as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true;
                }
                "required" => {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}': put type=secret or type=ssh first",
                        kind_name(m.kind)
                    ));
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let key = key.to_lowercase();
        let v = expand(raw)?;
        match key.as_str() {
            "type" => {
                m.kind = match v.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let hint = crate::suggest::closest(&v, ["bind", "cache", "tmpfs", "secret", "ssh"])
                            .map(|s| format!("; did you mean {s}?"))
                            .unwrap_or_default();
                        return Err(format!("unsupported mount type {v:?}{hint}"));
                    }
                }
            }
            "from" => m.from = Some(v),
            "source" | "src" => m.source = Some(v),
            "target" | "dst" | "destination" => m.target = Some(v),
            "readonly" | "ro" => {
                m.read_only = crate::directives::parse_go_bool(&v).ok_or_else(|| bad_value(&key, &v))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !crate::directives::parse_go_bool(&v).ok_or_else(|| bad_value(&key, &v))?;
                ro_auto = false;
            }
            "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                m.required = crate::directives::parse_go_bool(&v).ok_or_else(|| bad_value(&key, &v))?;
            }
            "size" if m.kind == MountType::Tmpfs => {
                m.size = Some(ram_in_bytes(&v).ok_or_else(|| bad_value(&key, &v))?);
            }
            "required" | "size" => {
                return Err(format!(
                    "unexpected key '{key}' for mount type '{}'",
                    kind_name(m.kind)
                ));
            }
            "id" => m.id = Some(v),
            "sharing" => {
                m.sharing = Some(match v.to_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value {v:?}: use shared, private or locked"
                        ));
                    }
                })
            }
            "mode" => {
                m.mode = Some(u32::from_str_radix(&v, 8).map_err(|_| format!("invalid value {v} for mode"))?)
            }
            "uid" => m.uid = Some(v.parse().map_err(|_| format!("invalid value {v} for uid"))?),
            "gid" => m.gid = Some(v.parse().map_err(|_| format!("invalid value {v} for gid"))?),
            "env" => m.env = Some(v),
            _ => {
                let hint = crate::suggest::closest(&key, MOUNT_KEYS)
                    .map(|s| format!("; did you mean {s}?"))
                    .unwrap_or_default();
                return Err(format!("unexpected key '{key}' in '{field}'{hint}"));
            }
        }
    }
    let file_info_allowed = matches!(m.kind, MountType::Secret | MountType::Ssh | MountType::Cache);
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{name} not allowed for {:?} type mounts",
                    kind_name(m.kind)
                ));
            }
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".to_string());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".to_string());
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err("invalid secret mount. one of source, target required".to_string());
        }
        if m.source.is_some() && m.id.is_some() {
            return Err("both source and id can't be set".to_string());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            kind_name(m.kind)
        ));
    }
    Ok(m)
}

fn kind_name(k: MountType) -> &'static str {
    match k {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

/// docker/go-units `RAMInBytes`: `64m`, `1.5GiB`, `1024` (binary multiples).
pub(crate) fn ram_in_bytes(s: &str) -> Option<i64> {
    let s = s.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(num_len);
    if num.is_empty() || !num.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = value * mult;
    (bytes < 9.2e18).then_some(bytes as i64)
}

/// A `RUN --device` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// The CDI device name.
    pub name: String,
    /// Fail if the device is not available.
    pub required: bool,
}

/// Parses a `--device` value (`name[,required[=bool]]`).
pub(crate) fn parse_device(value: &str) -> Result<Device, String> {
    let fields = csv_fields(value).map_err(|e| format!("failed to parse csv devices: {e}"))?;
    let mut d = Device {
        name: String::new(),
        required: false,
    };
    for field in fields {
        match field.split_once('=') {
            None if field.eq_ignore_ascii_case("required") => d.required = true,
            None if d.name.is_empty() => d.name = field,
            None => return Err(format!("invalid field '{field}' must be a key=value pair")),
            Some((k, v)) => match k.to_lowercase().as_str() {
                "name" if !d.name.is_empty() => {
                    return Err(format!("device name already set to {}", d.name));
                }
                "name" => d.name = v.to_string(),
                "required" => {
                    d.required = crate::directives::parse_go_bool(v)
                        .ok_or_else(|| format!("invalid value for required: {v}"))?;
                }
                _ if d.name.is_empty() => d.name = field.clone(),
                _ => return Err(format!("unexpected key '{k}' in '{field}'")),
            },
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(v: &str) -> Result<RawMount, String> {
        parse_mount(v, &mut |s| Ok(s.to_string()))
    }

    #[test]
    fn csv() {
        assert_eq!(csv_fields("a,b=c"), Ok(vec!["a".into(), "b=c".into()]));
        assert_eq!(csv_fields("\"a,b\",c"), Ok(vec!["a,b".into(), "c".into()]));
        assert_eq!(csv_fields("\"a\"\"b\""), Ok(vec!["a\"b".into()]));
        assert!(csv_fields("a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
    }

    #[test]
    fn defaults_per_type() {
        assert!(mount("target=/x").is_ok_and(|m| m.kind == MountType::Bind && m.read_only));
        assert!(mount("type=cache,target=/x").is_ok_and(|m| !m.read_only));
        assert!(mount("type=bind,target=/x,rw").is_ok_and(|m| !m.read_only));
        assert!(mount("type=tmpfs,target=/x,size=64m").is_ok_and(|m| m.size == Some(64 << 20)));
        assert!(mount("type=secret,id=tok,required").is_ok_and(|m| m.required));
    }

    #[test]
    fn mount_errors() {
        assert!(mount("type=nfs").is_err_and(|e| e.contains("unsupported mount type")));
        assert!(mount("type=bind,mode=0700,target=/x").is_err());
        assert!(mount("required,type=secret,id=x").is_err());
        assert!(mount("type=secret,from=x,id=y").is_err());
        assert!(mount("type=secret").is_err());
        assert!(mount("type=bind,sharing=locked,target=/x").is_err());
        assert!(mount("type=cache,target=/x,trgt=1").is_err_and(|e| e.contains("unexpected key")));
        assert!(mount("type=cache,target=/x,ro=maybe").is_err());
        assert!(mount("type=cache,mode=999,target=/x").is_err());
    }

    #[test]
    fn devices() {
        assert_eq!(
            parse_device("vendor.com/gpu=all,required"),
            Ok(Device {
                name: "vendor.com/gpu=all".into(),
                required: true
            })
        );
        assert_eq!(
            parse_device("name=x,required=false"),
            Ok(Device {
                name: "x".into(),
                required: false
            })
        );
        assert!(parse_device("a,b").is_err());
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(ram_in_bytes("1024"), Some(1024));
        assert_eq!(ram_in_bytes("1k"), Some(1024));
        assert_eq!(ram_in_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(ram_in_bytes("x"), None);
    }
}
