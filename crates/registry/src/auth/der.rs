//! Just enough DER to find the public key in a certificate or a `PUBLIC KEY` block, for the
//! token verification keys: no certificate validation happens here (the configuration names
//! the keys it trusts).

/// A public key for verifying token signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// A P-256 point, uncompressed (`04 || x || y`): ES256.
    P256(Vec<u8>),
    /// An RSA modulus and exponent, big-endian without leading zeros: RS256.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// 1.2.840.113549.1.1.1
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// 1.2.840.10045.2.1
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7
const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Reads one tag-length-value from the front of `input`; returns the tag and the value.
fn next<'a>(input: &mut &'a [u8]) -> Result<(u8, &'a [u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("truncated DER")?;
    let (&first, mut rest) = rest.split_first().ok_or("truncated DER")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err("unsupported DER length".to_owned());
        }
        let (bytes, tail) = rest.split_at(count);
        rest = tail;
        bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return Err("truncated DER".to_owned());
    }
    let (value, tail) = rest.split_at(len);
    *input = tail;
    Ok((tag, value))
}

fn expect<'a>(input: &mut &'a [u8], tag: u8, what: &str) -> Result<&'a [u8], String> {
    match next(input)? {
        (t, value) if t == tag => Ok(value),
        (t, _) => Err(format!(
            "expected {what} (DER tag {tag:#04x}), found tag {t:#04x}"
        )),
    }
}

fn unsigned(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// The key in a DER `SubjectPublicKeyInfo`.
pub(crate) fn spki(der: &[u8]) -> Result<PublicKey, String> {
    let mut input = der;
    let mut spki = expect(&mut input, SEQUENCE, "SubjectPublicKeyInfo")?;
    let mut algorithm = expect(&mut spki, SEQUENCE, "AlgorithmIdentifier")?;
    let oid = expect(&mut algorithm, OID, "algorithm OID")?;
    let bits = expect(&mut spki, BIT_STRING, "public key bits")?;
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err("public key bit string has unused bits".to_owned()),
    };
    if oid == EC_PUBLIC_KEY {
        let curve = expect(&mut algorithm, OID, "curve OID")?;
        if curve != PRIME256V1 {
            return Err("only the P-256 curve is supported for EC keys (ES256)".to_owned());
        }
        if key.len() != 65 || key[0] != 4 {
            return Err("EC public key is not an uncompressed P-256 point".to_owned());
        }
        Ok(PublicKey::P256(key.to_vec()))
    } else if oid == RSA_ENCRYPTION {
        let mut rsa = key;
        let mut sequence = expect(&mut rsa, SEQUENCE, "RSAPublicKey")?;
        let n = unsigned(expect(&mut sequence, INTEGER, "modulus")?);
        let e = unsigned(expect(&mut sequence, INTEGER, "exponent")?);
        if n.len() < 256 {
            return Err("RSA keys shorter than 2048 bits are not accepted".to_owned());
        }
        Ok(PublicKey::Rsa { n, e })
    } else {
        Err("unsupported key algorithm: only EC P-256 (ES256) and RSA (RS256) keys".to_owned())
    }
}

/// The key of a DER X.509 certificate (its validity is not checked).
pub(crate) fn certificate_key(der: &[u8]) -> Result<PublicKey, String> {
    let mut input = der;
    let mut certificate = expect(&mut input, SEQUENCE, "Certificate")?;
    let mut tbs = expect(&mut certificate, SEQUENCE, "TBSCertificate")?;
    if tbs.first() == Some(&VERSION) {
        next(&mut tbs)?;
    }
    // serial, signature algorithm, issuer, validity, subject
    for _ in 0..5 {
        next(&mut tbs)?;
    }
    let before = tbs;
    let (tag, value) = next(&mut tbs)?;
    if tag != SEQUENCE {
        return Err("certificate has no SubjectPublicKeyInfo".to_owned());
    }
    let whole = &before[..before.len() - tbs.len()];
    debug_assert!(whole.ends_with(value));
    spki(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lengths_and_rejects_truncation() {
        let mut input: &[u8] = &[0x04, 0x02, 0xaa, 0xbb, 0x05];
        assert_eq!(next(&mut input).unwrap(), (0x04, &[0xaa, 0xbb][..]));
        assert!(next(&mut input).is_err());
        let mut long: &[u8] = &[0x04, 0x81, 0x01, 0xcc];
        assert_eq!(next(&mut long).unwrap(), (0x04, &[0xcc][..]));
        let mut bad: &[u8] = &[0x04, 0x85, 1, 1, 1, 1, 1];
        assert!(next(&mut bad).is_err());
        let mut short: &[u8] = &[0x04, 0x03, 0x00];
        assert!(next(&mut short).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(spki(&[]).is_err());
        assert!(spki(&[0x30, 0x00]).is_err());
        assert!(certificate_key(&[0x30, 0x02, 0x30, 0x00]).is_err());
    }
}
