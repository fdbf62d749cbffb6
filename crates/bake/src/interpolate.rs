//! Compose's `$` interpolation of string values from the environment (compose-spec
//! "Interpolation"): `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
//! `${VAR?message}`, `${VAR:+alternative}`, `${VAR+alternative}`, `$$` for a literal `$`.
//! Defaults and alternatives may themselves hold interpolations.

use std::collections::BTreeMap;

/// Why a string could not be interpolated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InterpolationError {
    /// A `$` that starts nothing valid, or an unclosed `${`.
    Invalid,
    /// `${VAR:?message}` with `VAR` unset (or empty).
    Required { var: String, message: String },
}

/// `value` with every interpolation replaced from `env`.
pub(crate) fn interpolate(value: &str, env: &BTreeMap<String, String>) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = closing_brace(braced).ok_or(InterpolationError::Invalid)?;
            out.push_str(&expand(&braced[..end], env)?);
            rest = &braced[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(InterpolationError::Invalid);
            }
            out.push_str(env.get(&after[..len]).map_or("", String::as_str));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The body of one `${…}`: a name, then optionally an operator and its word.
fn expand(body: &str, env: &BTreeMap<String, String>) -> Result<String, InterpolationError> {
    let len = name_len(body);
    if len == 0 {
        return Err(InterpolationError::Invalid);
    }
    let (name, op) = body.split_at(len);
    let value = env.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (unset_only, op) = match op.strip_prefix(':') {
        Some(op) => (false, op),
        None => (true, op),
    };
    // "Set" for the colon forms means set and non-empty; without the colon, merely set.
    let set = if unset_only { value.is_some() } else { set_nonempty };
    let own = || value.cloned().unwrap_or_default();
    if op.is_empty() && !unset_only {
        return Err(InterpolationError::Invalid);
    }
    match op.split_at(op.len().min(1)) {
        ("", _) => Ok(own()),
        ("-", word) => {
            if set {
                Ok(own())
            } else {
                interpolate(word, env)
            }
        }
        ("+", word) => {
            if set {
                interpolate(word, env)
            } else {
                Ok(String::new())
            }
        }
        ("?", word) => {
            if set {
                Ok(own())
            } else {
                Err(InterpolationError::Required {
                    var: name.to_owned(),
                    message: interpolate(word, env)?,
                })
            }
        }
        _ => Err(InterpolationError::Invalid),
    }
}

/// The length of the variable name `s` starts with (`[A-Za-z_][A-Za-z0-9_]*`), 0 if none.
fn name_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    if !bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        return 0;
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

/// Where the `}` closing a `${` is, counting nested `${…}`.
fn closing_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("TAG", "1.2"), ("EMPTY", ""), ("REPO", "reg/app")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn every_form_compose_defines() {
        let env = env();
        let cases = [
            ("plain", "plain"),
            ("$REPO:$TAG", "reg/app:1.2"),
            ("${REPO}:${TAG}", "reg/app:1.2"),
            ("${MISSING}", ""),
            ("${MISSING:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${MISSING-dflt}", "dflt"),
            ("${TAG:+set}", "set"),
            ("${EMPTY:+set}", ""),
            ("${EMPTY+set}", "set"),
            ("${MISSING:-${REPO}:${TAG:-x}}", "reg/app:1.2"),
            ("cost $$5", "cost $5"),
        ];
        for (input, want) in cases {
            assert_eq!(interpolate(input, &env).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn required_and_invalid() {
        let env = env();
        assert_eq!(
            interpolate("${MISSING:?set it}", &env),
            Err(InterpolationError::Required {
                var: "MISSING".into(),
                message: "set it".into()
            })
        );
        assert!(matches!(
            interpolate("${EMPTY:?x}", &env),
            Err(InterpolationError::Required { .. })
        ));
        assert_eq!(interpolate("${EMPTY?x}", &env).as_deref(), Ok(""));
        for bad in ["${TAG", "$", "a $ b", "${}", "${TAG:}", "${TAG%x}"] {
            assert_eq!(interpolate(bad, &env), Err(InterpolationError::Invalid), "{bad}");
        }
    }
}
