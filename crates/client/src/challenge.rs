//! `WWW-Authenticate` challenges (RFC 7235), as registries send them with a 401.
//!
//! Registries send `Bearer realm="…",service="…",scope="…"` (the token flow) or
//! `Basic realm="…"`. Real servers differ in quoting, spacing, case and order, and a scope list
//! contains commas inside its quotes, so this is a small tokenizer rather than a split on `,`.

use std::collections::BTreeMap;

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic: send `Authorization: Basic base64(user:password)`.
    Basic,
    /// The registry token flow: fetch a token from `realm`, then send `Authorization: Bearer`.
    Bearer(BearerChallenge),
}

/// The parameters of a `Bearer` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    /// Where to ask for a token.
    pub realm: String,
    /// The `service` parameter to pass to the token endpoint, if the registry named one.
    pub service: Option<String>,
    /// The scopes the registry says the request needed (space-separated in the header).
    pub scopes: Vec<String>,
    /// The `error` parameter (`invalid_token`, `insufficient_scope`), if any.
    pub error: Option<String>,
}

/// Parses every challenge in a `WWW-Authenticate` header value.
///
/// Unknown schemes are skipped, as are `Bearer` challenges without a realm (nothing could be
/// done with them). Parameter names are case-insensitive; values may be quoted (with `\`
/// escapes) or bare tokens.
pub fn parse(header: &str) -> Vec<Challenge> {
    parse_raw(header)
        .into_iter()
        .filter_map(|(scheme, params)| match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let realm = params.get("realm")?.clone();
                if realm.is_empty() {
                    return None;
                }
                Some(Challenge::Bearer(BearerChallenge {
                    realm,
                    service: params.get("service").filter(|s| !s.is_empty()).cloned(),
                    scopes: params
                        .get("scope")
                        .map(|s| s.split_whitespace().map(str::to_owned).collect())
                        .unwrap_or_default(),
                    error: params.get("error").cloned(),
                }))
            }
            _ => None,
        })
        .collect()
}

/// The challenge rbuild acts on: Bearer if the registry offers it, else Basic.
pub fn preferred(challenges: Vec<Challenge>) -> Option<Challenge> {
    let mut basic = None;
    for challenge in challenges {
        match challenge {
            Challenge::Bearer(_) => return Some(challenge),
            Challenge::Basic => basic = Some(Challenge::Basic),
        }
    }
    basic
}

type Params = BTreeMap<String, String>;

/// Splits a header into `(scheme, params)` pairs.
fn parse_raw(header: &str) -> Vec<(String, Params)> {
    let mut lexer = Lexer {
        chars: header.chars().collect(),
        at: 0,
    };
    let mut challenges: Vec<(String, Params)> = Vec::new();
    loop {
        lexer.skip_separators();
        let Some(word) = lexer.token() else {
            // Not a token: skip one character so malformed input cannot loop forever.
            if lexer.bump().is_none() {
                break;
            }
            continue;
        };
        lexer.skip_spaces();
        if lexer.peek() == Some('=') {
            // `name=value`: a parameter of the current challenge.
            lexer.bump();
            lexer.skip_spaces();
            let value = lexer.value();
            if let Some((_, params)) = challenges.last_mut() {
                params.insert(word.to_ascii_lowercase(), value);
            }
        } else {
            // A bare token starts a new challenge.
            challenges.push((word, Params::new()));
            // A token68 credential (`Negotiate abc==`) may follow; skip it.
            let save = lexer.at;
            if let Some(_token68) = lexer.token() {
                lexer.skip_spaces();
                let mut equals = 0;
                while lexer.peek() == Some('=') {
                    lexer.bump();
                    equals += 1;
                }
                lexer.skip_spaces();
                let at_boundary = matches!(lexer.peek(), None | Some(','));
                if !(at_boundary && equals != 1) {
                    lexer.at = save;
                }
            }
        }
    }
    challenges
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.at += 1;
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | ',')) {
            self.at += 1;
        }
    }

    /// An RFC 7230 token (`tchar`s).
    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while let Some(c) = self.peek() {
            let tchar = c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if !tchar {
                break;
            }
            self.at += 1;
        }
        (self.at > start).then(|| self.chars[start..self.at].iter().collect())
    }

    /// A quoted string (with `\` escapes), or a bare value up to the next `,` or space.
    fn value(&mut self) -> String {
        let mut value = String::new();
        if self.peek() == Some('"') {
            self.bump();
            while let Some(c) = self.bump() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some(escaped) = self.bump() {
                            value.push(escaped);
                        }
                    }
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = self.peek() {
                if c == ',' || c == ' ' || c == '\t' {
                    break;
                }
                value.push(c);
                self.at += 1;
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(header: &str) -> BearerChallenge {
        match preferred(parse(header)) {
            Some(Challenge::Bearer(b)) => b,
            other => panic!("{header:?} gave {other:?}"),
        }
    }

    #[test]
    fn docker_hub_style() {
        let b = bearer(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(b.realm, "https://auth.docker.io/token");
        assert_eq!(b.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(b.scopes, ["repository:library/busybox:pull"]);
    }

    #[test]
    fn commas_inside_quotes_and_spaces_between_params() {
        let b = bearer(
            r#"Bearer realm="https://a/token", service="reg", scope="repository:samalba/my-app:pull,push repository:x:pull", error="insufficient_scope""#,
        );
        assert_eq!(
            b.scopes,
            ["repository:samalba/my-app:pull,push", "repository:x:pull"]
        );
        assert_eq!(b.error.as_deref(), Some("insufficient_scope"));
    }

    #[test]
    fn case_order_bare_values_and_escapes() {
        let b = bearer(r#"bearer Service=ghcr.io,REALM=https://ghcr.io/token,scope="a\"b""#);
        assert_eq!(b.realm, "https://ghcr.io/token");
        assert_eq!(b.service.as_deref(), Some("ghcr.io"));
        assert_eq!(b.scopes, ["a\"b"]);
    }

    #[test]
    fn basic_and_several_challenges() {
        assert_eq!(parse(r#"Basic realm="Registry Realm""#), [Challenge::Basic]);
        let all = parse(r#"Basic realm="x", Bearer realm="https://t/token",service="s""#);
        assert_eq!(all.len(), 2);
        assert!(matches!(preferred(all), Some(Challenge::Bearer(b)) if b.realm == "https://t/token"));
        let all = parse(r#"Negotiate abc==, Basic realm="y""#);
        assert_eq!(all, [Challenge::Basic]);
    }

    #[test]
    fn garbage_does_not_panic() {
        for header in [
            "",
            ",,,",
            "=",
            "Bearer",
            "Bearer realm",
            "Bearer realm=\"unterminated",
            "\u{e9}\"=,",
        ] {
            let _ = parse(header);
        }
        // Bearer with no realm is useless.
        assert_eq!(parse("Bearer service=x"), []);
    }
}
