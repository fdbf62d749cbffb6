//! JSON Web Tokens as the Docker registry token spec uses them: ES256 signing for the built-in
//! token service, ES256 and RS256 verification for it and for external issuers.
//!
//! Verification is deliberately narrow: the header's `alg` must be one the key in hand can
//! check (`none`, HMAC and anything else are refused before any claim is read), the signature
//! is checked before the claims are parsed, and `exp` is mandatory.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use rustls::pki_types::pem::{PemObject, SectionKind};
use serde::{Deserialize, Serialize};

use super::AuthError;
use super::der::{self, PublicKey};

/// The `typ` of access tokens.
const ACCESS_TYP: &str = "JWT";

/// Why a token was refused. The client only ever learns "invalid token"; the reason is logged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not one this registry accepts (`none` included).
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// The header names critical extensions.
    #[error("critical header extensions are not supported")]
    Critical,
    /// No configured key verifies the signature.
    #[error("signature does not verify with any trusted key")]
    Signature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("issuer {0:?} is not trusted")]
    Issuer(String),
    /// `aud` does not name this service.
    #[error("token is not for this service (audience {0:?})")]
    Audience(String),
    /// A refresh token where an access token belongs, or the reverse.
    #[error("wrong kind of token")]
    Kind,
}

/// `aud`: one string or a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

/// One `access` entry: what the token allows on one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
}

/// The claims of an access or refresh token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user name, empty for anonymous.
    #[serde(default)]
    pub sub: String,
    /// Audience: the service.
    pub aud: Audience,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Token id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// What the token allows.
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// Set only on refresh tokens: a fingerprint of the user's password entry, so changing
    /// the password revokes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbuild_refresh: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// The bytes of a key file.
fn read_key_file(path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Makes the error for an unusable key file.
fn key_error(path: &Path) -> impl Fn(String) -> AuthError + '_ {
    move |reason| AuthError::Key {
        path: path.to_owned(),
        reason,
    }
}

/// A key tokens may be verified with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyKey {
    kid: Option<String>,
    key: PublicKey,
}

impl VerifyKey {
    fn alg(&self) -> &'static str {
        match self.key {
            PublicKey::P256(_) => "ES256",
            PublicKey::Rsa { .. } => "RS256",
        }
    }

    fn verifies(&self, message: &[u8], signature_bytes: &[u8]) -> bool {
        match &self.key {
            PublicKey::P256(point) => {
                signature_bytes.len() == 64
                    && signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(message, signature_bytes)
                        .is_ok()
            }
            PublicKey::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature_bytes)
                .is_ok(),
        }
    }

    /// Every key in a PEM file: `PUBLIC KEY` blocks and certificates' keys.
    pub fn from_pem_file(path: &Path) -> Result<Vec<VerifyKey>, AuthError> {
        let bytes = read_key_file(path)?;
        let key_error = key_error(path);
        let mut keys = Vec::new();
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
            let (kind, der_bytes) = section.map_err(|e| key_error(format!("not valid PEM: {e}")))?;
            let key = match kind {
                SectionKind::PublicKey => der::spki(&der_bytes),
                SectionKind::Certificate => der::certificate_key(&der_bytes),
                _ => continue,
            }
            .map_err(&key_error)?;
            keys.push(VerifyKey { kid: None, key });
        }
        if keys.is_empty() {
            return Err(key_error("no PUBLIC KEY or CERTIFICATE block".to_owned()));
        }
        Ok(keys)
    }

    /// The usable keys of a JWKS document (`{"keys": [...]}`): EC P-256 and RSA signing keys.
    /// Keys of other types or uses are skipped; a malformed key of a known type is an error.
    pub fn from_jwks(path: &Path) -> Result<Vec<VerifyKey>, AuthError> {
        #[derive(Deserialize)]
        struct Jwk {
            kty: String,
            #[serde(default)]
            kid: Option<String>,
            #[serde(default, rename = "use")]
            usage: Option<String>,
            #[serde(default)]
            alg: Option<String>,
            #[serde(default)]
            crv: Option<String>,
            #[serde(default)]
            x: Option<String>,
            #[serde(default)]
            y: Option<String>,
            #[serde(default)]
            n: Option<String>,
            #[serde(default)]
            e: Option<String>,
        }
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<Jwk>,
        }
        let bytes = read_key_file(path)?;
        let key_error = key_error(path);
        let jwks: Jwks = rbuild_oci::json::from_slice(&bytes)
            .map_err(|e| key_error(format!("not a JWKS document: {e}")))?;
        let field = |value: &Option<String>, name: &str, kid: &Option<String>| {
            let text = value
                .as_deref()
                .ok_or_else(|| key_error(format!("key {kid:?}: missing {name}")))?;
            B64.decode(text.trim_end_matches('='))
                .map_err(|_| key_error(format!("key {kid:?}: {name} is not base64url")))
        };
        let mut keys = Vec::new();
        for jwk in &jwks.keys {
            if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let key = match (jwk.kty.as_str(), jwk.alg.as_deref()) {
                ("EC", None | Some("ES256")) => {
                    if jwk.crv.as_deref() != Some("P-256") {
                        continue;
                    }
                    let (x, y) = (field(&jwk.x, "x", &jwk.kid)?, field(&jwk.y, "y", &jwk.kid)?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(key_error(format!("key {:?}: x and y must be 32 bytes", jwk.kid)));
                    }
                    PublicKey::P256([&[4u8][..], &x, &y].concat())
                }
                ("RSA", None | Some("RS256")) => {
                    let n = field(&jwk.n, "n", &jwk.kid)?;
                    let e = field(&jwk.e, "e", &jwk.kid)?;
                    let n = n[n.iter().position(|b| *b != 0).unwrap_or(n.len())..].to_vec();
                    if n.len() < 256 {
                        return Err(key_error(format!("key {:?}: RSA keys need 2048 bits", jwk.kid)));
                    }
                    PublicKey::Rsa { n, e }
                }
                _ => continue,
            };
            keys.push(VerifyKey {
                kid: jwk.kid.clone(),
                key,
            });
        }
        if keys.is_empty() {
            return Err(key_error("no usable ES256 (P-256) or RS256 key".to_owned()));
        }
        Ok(keys)
    }
}

/// The ES256 key the built-in token service signs with.
pub struct Signer {
    pair: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    fn from_pkcs8(pkcs8: &[u8], rng: SystemRandom) -> Result<Signer, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| format!("not a P-256 key in PKCS#8: {e}"))?;
        let kid = thumbprint(pair.public_key().as_ref());
        Ok(Signer { pair, kid, rng })
    }

    /// A fresh key, for a token service with no configured key.
    pub fn generate() -> Result<Signer, AuthError> {
        let rng = SystemRandom::new();
        let failed = |reason: String| AuthError::Key {
            path: "(generated)".into(),
            reason,
        };
        let document = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| failed(e.to_string()))?;
        Signer::from_pkcs8(document.as_ref(), rng).map_err(failed)
    }

    /// The key in a PEM file (`PRIVATE KEY`, PKCS#8, P-256), e.g. from
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
    pub fn from_pem_file(path: &Path) -> Result<Signer, AuthError> {
        let bytes = read_key_file(path)?;
        let key_error = key_error(path);
        let mut sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes);
        let pkcs8 = loop {
            match sections.next() {
                Some(Ok((SectionKind::PrivateKey, der_bytes))) => break der_bytes,
                Some(Ok((SectionKind::EcPrivateKey, _))) => {
                    return Err(key_error(
                        "an `EC PRIVATE KEY` (SEC1) block; convert it with `openssl pkcs8 -topk8 -nocrypt`"
                            .to_owned(),
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(key_error(format!("not valid PEM: {e}"))),
                None => return Err(key_error("no PRIVATE KEY block".to_owned())),
            }
        };
        Signer::from_pkcs8(&pkcs8, SystemRandom::new()).map_err(key_error)
    }

    /// The key that verifies this signer's tokens.
    pub fn verify_key(&self) -> VerifyKey {
        VerifyKey {
            kid: Some(self.kid.clone()),
            key: PublicKey::P256(self.pair.public_key().as_ref().to_vec()),
        }
    }

    /// A signed token with `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = Header {
            alg: "ES256".to_owned(),
            typ: Some(ACCESS_TYP.to_owned()),
            kid: Some(self.kid.clone()),
            crit: None,
        };
        let message = format!("{}.{}", b64_json(&header), b64_json(claims));
        let signature = self
            .pair
            .sign(&self.rng, message.as_bytes())
            .map_err(|_| TokenError::Signature)?;
        Ok(format!("{message}.{}", B64.encode(signature.as_ref())))
    }

    /// A random token id.
    pub fn random_id(&self) -> String {
        let mut bytes = [0u8; 16];
        // A failing system RNG leaves zeros; ids are for logs, not security.
        let _ = self.rng.fill(&mut bytes);
        hex(&bytes)
    }
}

/// A value as base64url-encoded JSON.
fn b64_json<T: Serialize>(value: &T) -> String {
    B64.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 7638 JWK thumbprint of a P-256 point: the key id of the built-in service's tokens.
fn thumbprint(point: &[u8]) -> String {
    let (x, y) = point.get(1..33).zip(point.get(33..65)).unwrap_or((&[], &[]));
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        B64.encode(x),
        B64.encode(y)
    );
    B64.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

/// What a token must satisfy besides its signature.
pub struct Expect<'a> {
    /// The issuer.
    pub issuer: &'a str,
    /// The audience (the service).
    pub audience: &'a str,
    /// Tolerated clock skew, seconds.
    pub leeway: i64,
    /// Now, seconds since the epoch.
    pub now: i64,
    /// A refresh token (true) or an access token (false).
    pub refresh: bool,
}

/// Verifies a compact JWS with one of `keys` and returns its claims.
pub fn verify(token: &str, keys: &[VerifyKey], expect: &Expect<'_>) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let header_bytes = B64
        .decode(header_b64)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let header: Header = rbuild_oci::json::from_slice(&header_bytes)
        .map_err(|_| TokenError::Malformed("header is not JSON"))?;
    if header.crit.is_some() {
        return Err(TokenError::Critical);
    }
    if !matches!(header.alg.as_str(), "ES256" | "RS256") {
        return Err(TokenError::Algorithm(header.alg));
    }
    let signature_bytes = B64
        .decode(signature_b64)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    let message = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    let named: Vec<&VerifyKey> = keys
        .iter()
        .filter(|k| header.kid.is_some() && k.kid == header.kid)
        .collect();
    let candidates: Vec<&VerifyKey> = if named.is_empty() {
        keys.iter()
            .filter(|k| k.kid.is_none() || header.kid.is_none())
            .collect()
    } else {
        named
    };
    let verified = candidates
        .iter()
        .filter(|k| k.alg() == header.alg)
        .any(|k| k.verifies(message, &signature_bytes));
    if !verified {
        return Err(TokenError::Signature);
    }
    let payload = B64
        .decode(payload_b64)
        .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
    let claims: Claims = rbuild_oci::json::from_slice(&payload)
        .map_err(|_| TokenError::Malformed("claims are not as expected"))?;
    if claims.exp.saturating_add(expect.leeway) < expect.now {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf.saturating_sub(expect.leeway) > expect.now)
    {
        return Err(TokenError::NotYetValid);
    }
    if claims.iss != expect.issuer {
        return Err(TokenError::Issuer(claims.iss));
    }
    if !claims.aud.contains(expect.audience) {
        return Err(TokenError::Audience(format!("{:?}", claims.aud)));
    }
    if claims.rbuild_refresh.is_some() != expect.refresh {
        return Err(TokenError::Kind);
    }
    Ok(claims)
}

/// Helpers for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    impl VerifyKey {
        /// The key without its id, to compare keys from different sources.
        pub(crate) fn kid_less(&self) -> VerifyKey {
            VerifyKey {
                kid: None,
                key: self.key.clone(),
            }
        }
    }

    /// A JWKS document holding `key` (P-256).
    pub(crate) fn jwks(key: &VerifyKey) -> String {
        let PublicKey::P256(point) = &key.key else {
            panic!("not a P-256 key")
        };
        serde_json::json!({"keys": [
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": key.kid, "use": "sig",
             "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}
        ]})
        .to_string()
    }

    /// A `PUBLIC KEY` PEM block holding `key` (P-256).
    pub(crate) fn spki_pem(key: &VerifyKey) -> String {
        let PublicKey::P256(point) = &key.key else {
            panic!("not a P-256 key")
        };
        let prefix = [
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
            0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        let der_bytes = [&prefix[..], point].concat();
        let body = base64::engine::general_purpose::STANDARD.encode(der_bytes);
        format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "issuer".into(),
            sub: "alice".into(),
            aud: Audience::One("svc".into()),
            exp,
            nbf: Some(exp - 300),
            iat: Some(exp - 300),
            jti: "1".into(),
            access: vec![AccessEntry {
                kind: "repository".into(),
                name: "a/b".into(),
                actions: vec!["pull".into()],
            }],
            rbuild_refresh: None,
        }
    }

    fn expect(now: i64) -> Expect<'static> {
        Expect {
            issuer: "issuer",
            audience: "svc",
            leeway: 0,
            now,
            refresh: false,
        }
    }

    fn forge(header: &str, claims: &Claims, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            B64.encode(header),
            B64.encode(serde_json::to_vec(claims).unwrap()),
            B64.encode(signature)
        )
    }

    #[test]
    fn signs_and_verifies() {
        let signer = Signer::generate().unwrap();
        let token = signer.sign(&claims(1000)).unwrap();
        let keys = [signer.verify_key()];
        assert_eq!(verify(&token, &keys, &expect(900)).unwrap(), claims(1000));
        assert_eq!(verify(&token, &keys, &expect(1001)), Err(TokenError::Expired));
        assert_eq!(verify(&token, &keys, &expect(600)), Err(TokenError::NotYetValid));
        let other = Signer::generate().unwrap();
        assert_eq!(
            verify(&token, &[other.verify_key()], &expect(900)),
            Err(TokenError::Signature)
        );
        let mut wrong = expect(900);
        wrong.audience = "other";
        assert!(matches!(
            verify(&token, &keys, &wrong),
            Err(TokenError::Audience(_))
        ));
        wrong = expect(900);
        wrong.issuer = "someone";
        assert!(matches!(
            verify(&token, &keys, &wrong),
            Err(TokenError::Issuer(_))
        ));
        wrong = expect(900);
        wrong.refresh = true;
        assert_eq!(verify(&token, &keys, &wrong), Err(TokenError::Kind));
    }

    #[test]
    fn refuses_tampering_and_other_algorithms() {
        let signer = Signer::generate().unwrap();
        let keys = [signer.verify_key()];
        let token = signer.sign(&claims(1000)).unwrap();
        let signature = token.rsplit('.').next().unwrap();
        let signature = B64.decode(signature).unwrap();

        // Claims changed after signing.
        let mut more = claims(1000);
        more.access[0].actions.push("push".into());
        let header = r#"{"alg":"ES256","typ":"JWT"}"#;
        assert_eq!(
            verify(&forge(header, &more, &signature), &keys, &expect(900)),
            Err(TokenError::Signature)
        );
        // alg=none, with and without a signature part.
        for alg in ["none", "None", "HS256", "ES384", "RS256"] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            let result = verify(&forge(&header, &claims(1000), b""), &keys, &expect(900));
            assert!(result.is_err(), "{alg}");
        }
        let unsigned = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none"}"#),
            B64.encode(serde_json::to_vec(&claims(1000)).unwrap())
        );
        assert_eq!(
            verify(&unsigned, &keys, &expect(900)),
            Err(TokenError::Algorithm("none".into()))
        );
        let crit = r#"{"alg":"ES256","crit":["exp"]}"#;
        assert_eq!(
            verify(&forge(crit, &claims(1000), &signature), &keys, &expect(900)),
            Err(TokenError::Critical)
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!", &format!("{token}x.y")] {
            assert!(verify(garbage, &keys, &expect(900)).is_err(), "{garbage}");
        }
    }

    #[test]
    fn audience_may_be_a_list() {
        let signer = Signer::generate().unwrap();
        let mut c = claims(1000);
        c.aud = Audience::Many(vec!["x".into(), "svc".into()]);
        let token = signer.sign(&c).unwrap();
        assert!(verify(&token, &[signer.verify_key()], &expect(900)).is_ok());
    }
}
