//! Content digests (`sha256:…`, `sha512:…`): parsing, validation and streaming computation.
//!
//! A [`Digest`] can only be made from a registered algorithm and an encoded part of exactly the
//! right length in lowercase hex, so its string form is safe to use as a path component.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A digest algorithm rbuild can compute and verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the algorithm of nearly every image in the wild.
    Sha256,
    /// SHA-512, registered by the OCI image spec and accepted by the distribution spec.
    Sha512,
}

impl Algorithm {
    /// Every supported algorithm, for code that walks storage laid out by algorithm.
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

    /// The algorithm's name as it appears before the `:` of a digest.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded part of a digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Looks an algorithm up by its name.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// A fresh streaming hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        Hasher::new(self)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string is not a usable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The string does not have the `algorithm:encoded` shape of the OCI grammar.
    #[error("malformed digest {0:?}: expected algorithm:hex, e.g. sha256:<64 hex digits>")]
    Malformed(String),
    /// The algorithm is well-formed but not one rbuild supports.
    #[error("unsupported digest algorithm {0:?}: rbuild supports sha256 and sha512")]
    UnsupportedAlgorithm(String),
    /// The encoded part has the wrong length or is not lowercase hex.
    #[error("invalid {algorithm} digest {digest:?}: expected {expected} lowercase hex digits")]
    BadEncoding {
        /// The algorithm named in the digest.
        algorithm: Algorithm,
        /// The digest as given.
        digest: String,
        /// How many hex digits the algorithm needs.
        expected: usize,
    },
}

/// A validated content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part after the `:`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }

    /// The digest of `bytes` under `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(bytes);
        hasher.finalize()
    }

    /// The SHA-256 digest whose raw bytes are `raw` (as a stat cache keeps them).
    pub fn sha256_from_raw(raw: &[u8; 32]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: lower_hex(raw),
        }
    }

    /// Makes a digest from an algorithm and a hex string, checking the encoding.
    pub fn from_parts(algorithm: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        let well_formed = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(DigestError::BadEncoding {
                algorithm,
                digest: format!("{algorithm}:{hex}"),
                expected: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

/// Lowercase hex, through a buffer rather than `hex::encode`'s character iterator (a warm
/// build turns tens of thousands of cached digests into text).
fn lower_hex(bytes: &[u8]) -> String {
    let mut text = vec![0u8; bytes.len() * 2];
    // The buffer is exactly twice as long: encoding cannot fail, and hex digits are UTF-8.
    let _ = hex::encode_to_slice(bytes, &mut text);
    String::from_utf8(text).unwrap_or_default()
}

/// The OCI grammar for an algorithm: components of `[a-z0-9]+` joined by `+ . _ -`.
fn is_algorithm_syntax(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-'])
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// The OCI grammar for the encoded part: `[a-zA-Z0-9=_-]+`.
fn is_encoded_syntax(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let (algorithm, encoded) = s
            .split_once(':')
            .filter(|(a, e)| is_algorithm_syntax(a) && is_encoded_syntax(e))
            .ok_or_else(|| DigestError::Malformed(s.to_owned()))?;
        let algorithm = Algorithm::from_name(algorithm)
            .ok_or_else(|| DigestError::UnsupportedAlgorithm(algorithm.to_owned()))?;
        Digest::from_parts(algorithm, encoded)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A streaming hasher that produces a [`Digest`].
#[derive(Clone)]
pub enum Hasher {
    /// Computing SHA-256.
    Sha256(sha2::Sha256),
    /// Computing SHA-512.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// Finishes and returns the digest.
    pub fn finalize(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, lower_hex(&h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, lower_hex(&h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn computes_known_digests() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY_SHA256);
        let sha512 = Digest::of(Algorithm::Sha512, b"");
        assert!(sha512.to_string().starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(sha512.hex().len(), 128);
    }

    #[test]
    fn parses_and_round_trips() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
    }

    #[test]
    fn rejects_bad_digests() {
        let cases = [
            ("", "malformed"),
            ("sha256", "malformed"),
            ("sha256:", "malformed"),
            (":abc", "malformed"),
            ("sha256:../../etc/passwd", "malformed"),
            ("SHA256:abc", "malformed"),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported"),
            ("sha256:abc", "invalid"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "invalid",
            ),
        ];
        for (input, kind) in cases {
            let err = input.parse::<Digest>().unwrap_err().to_string();
            assert!(err.contains(kind), "{input:?} gave {err:?}");
        }
    }

    #[test]
    fn streaming_equals_one_shot() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.finalize(), Digest::sha256_of(b"hello"));
    }
}
