//! A small JSON reader for exec-form arguments.
//!
//! Exec form must be a JSON array of strings. Go's decoder decides what
//! counts: invalid JSON makes BuildKit fall back to shell form, while valid
//! JSON with a non-string element is an error. A purpose-built reader makes
//! those two outcomes explicit and keeps Go's leniencies (a lone surrogate
//! escape becomes U+FFFD instead of failing).

/// The outcome of reading an exec-form argument list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A valid array of strings.
    Strings(Vec<String>),
    /// Valid JSON, but not an array of strings.
    NotStrings,
    /// Not valid JSON.
    Invalid,
}

/// Reads `text` as one JSON value that should be an array of strings.
pub(crate) fn string_array(text: &str) -> Parsed {
    let mut r = Reader {
        s: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    r.ws();
    let Some(value) = r.value() else {
        return Parsed::Invalid;
    };
    r.ws();
    if r.pos != r.s.len() {
        return Parsed::Invalid;
    }
    match value {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s),
                    Value::Other => return Parsed::NotStrings,
                    Value::Array(_) => return Parsed::NotStrings,
                }
            }
            Parsed::Strings(out)
        }
        _ => Parsed::NotStrings,
    }
}

enum Value {
    String(String),
    Array(Vec<Value>),
    Other,
}

/// Nesting beyond this is rejected rather than risking the stack.
const MAX_DEPTH: usize = 128;

struct Reader<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> Option<()> {
        if self.s[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Some(())
        } else {
            None
        }
    }

    fn value(&mut self) -> Option<Value> {
        match self.peek()? {
            b'"' => self.string().map(Value::String),
            b'[' => self.nested(|r| r.array()),
            b'{' => self.nested(|r| r.object()),
            b't' => self.eat(b"true").map(|_| Value::Other),
            b'f' => self.eat(b"false").map(|_| Value::Other),
            b'n' => self.eat(b"null").map(|_| Value::Other),
            b'-' | b'0'..=b'9' => self.number().map(|_| Value::Other),
            _ => None,
        }
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Option<Value>) -> Option<Value> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn array(&mut self) -> Option<Value> {
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Some(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self) -> Option<Value> {
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Some(Value::Other);
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            self.string()?;
            self.ws();
            self.eat(b":")?;
            self.ws();
            self.value()?;
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(Value::Other);
                }
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.pos..self.pos + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        let v = u32::from_str_radix(h, 16).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        Some(v)
    }

    fn string(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    };
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                0..=0x1f => return None,
                _ => out.push(b),
            }
        }
    }

    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) && self.s[self.pos..].starts_with(b"\\u") {
            let save = self.pos;
            self.pos += 2;
            if let Some(second) = self.hex4()
                && (0xDC00..0xE000).contains(&second)
            {
                let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                return Some(char::from_u32(c).unwrap_or('\u{FFFD}'));
            }
            self.pos = save;
        }
        Some(char::from_u32(first).unwrap_or('\u{FFFD}'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Parsed {
        Parsed::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn arrays_of_strings() {
        assert_eq!(string_array(r#"["a", "b c"]"#), strings(&["a", "b c"]));
        assert_eq!(string_array(r#"[]"#), strings(&[]));
        assert_eq!(string_array(" [ \"\\u00e9\\n\\\"\" ] "), strings(&["é\n\""]));
        assert_eq!(string_array(r#"["\ud83d\ude00"]"#), strings(&["😀"]));
        assert_eq!(string_array(r#"["\ud800"]"#), strings(&["\u{FFFD}"]));
    }

    #[test]
    fn non_strings() {
        assert_eq!(string_array(r#"["a", 1]"#), Parsed::NotStrings);
        assert_eq!(string_array(r#"[["a"]]"#), Parsed::NotStrings);
        assert_eq!(string_array(r#"[{"a": [1, true, null]}]"#), Parsed::NotStrings);
    }

    #[test]
    fn invalid_json() {
        for s in [
            r#"["a""#,
            r#"['a']"#,
            r#"["a",]"#,
            r#"["a"] x"#,
            "[01]",
            "[\"\t\"]",
            r#"["\x"]"#,
        ] {
            assert_eq!(string_array(s), Parsed::Invalid, "{s}");
        }
    }

    #[test]
    fn deep_nesting_is_invalid_not_a_crash() {
        let deep = "[".repeat(10_000);
        assert_eq!(string_array(&deep), Parsed::Invalid);
    }
}
