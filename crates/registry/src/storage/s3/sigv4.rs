//! AWS Signature Version 4 for S3: the `Authorization` header of a request, and presigned
//! URLs. <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html>

use ring::hmac;

use super::config::Credentials;

/// The payload hash sent instead of hashing bodies: the upload's own SHA-256 already covers
/// the content end to end, and hashing every part twice would double the CPU an upload costs.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What a signature covers besides the key: the region and the instant.
pub struct Scope<'a> {
    /// The signing region.
    pub region: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
}

impl Scope<'_> {
    fn date(&self) -> &str {
        &self.amz_date[..8]
    }

    fn credential_scope(&self) -> String {
        format!("{}/{}/s3/aws4_request", self.date(), self.region)
    }
}

/// The request being signed, in canonical form.
pub struct Canonical<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The URI-encoded path.
    pub path: &'a str,
    /// Query parameters, not yet encoded.
    pub query: &'a [(String, String)],
    /// Signed headers: lower-case names and their values (`host` among them).
    pub headers: &'a [(String, String)],
}

impl Canonical<'_> {
    fn request(&self, payload_hash: &str) -> (String, String) {
        let mut headers: Vec<&(String, String)> = self.headers.iter().collect();
        headers.sort();
        let signed: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
        let signed = signed.join(";");
        let mut text = format!("{}\n{}\n{}\n", self.method, self.path, query_string(self.query));
        for (name, value) in &headers {
            text.push_str(&format!("{name}:{}\n", value.trim()));
        }
        text.push_str(&format!("\n{signed}\n{payload_hash}"));
        (text, signed)
    }
}

/// The sorted, encoded query string both the signature and the URL use.
pub fn query_string(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (encode(k, false), encode(v, false)))
        .collect();
    pairs.sort();
    let pairs: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

/// URI-encodes `text` as SigV4 wants it: every byte but the unreserved ones, and `/` too
/// unless it separates path segments.
pub fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn signature(credentials: &Credentials, scope: &Scope<'_>, canonical_request: &str) -> String {
    let hashed = rbuild_oci::Digest::sha256_of(canonical_request.as_bytes());
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{}\n{}",
        scope.amz_date,
        scope.credential_scope(),
        hashed.hex()
    );
    let mac = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let secret = format!("AWS4{}", credentials.secret);
    let key = mac(secret.as_bytes(), scope.date());
    let key = mac(key.as_ref(), scope.region);
    let key = mac(key.as_ref(), "s3");
    let key = mac(key.as_ref(), "aws4_request");
    hex::encode(mac(key.as_ref(), &to_sign))
}

/// The `Authorization` header for a request whose headers include `host`,
/// `x-amz-content-sha256` (= `payload_hash`) and `x-amz-date`.
pub fn authorization(
    credentials: &Credentials,
    scope: &Scope<'_>,
    request: &Canonical<'_>,
    payload_hash: &str,
) -> String {
    let (canonical, signed) = request.request(payload_hash);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed}, Signature={}",
        credentials.key_id,
        scope.credential_scope(),
        signature(credentials, scope, &canonical)
    )
}

/// The query parameters that make `request` (a GET signing only `host`) a presigned URL valid
/// for `expires_secs`, the signature last.
pub fn presign_query(
    credentials: &Credentials,
    scope: &Scope<'_>,
    request: &Canonical<'_>,
    expires_secs: u64,
) -> String {
    let mut query = vec![
        ("X-Amz-Algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
        (
            "X-Amz-Credential".to_owned(),
            format!("{}/{}", credentials.key_id, scope.credential_scope()),
        ),
        ("X-Amz-Date".to_owned(), scope.amz_date.to_owned()),
        ("X-Amz-Expires".to_owned(), expires_secs.to_string()),
        ("X-Amz-SignedHeaders".to_owned(), "host".to_owned()),
    ];
    if let Some(token) = &credentials.token {
        query.push(("X-Amz-Security-Token".to_owned(), token.clone()));
    }
    let signed = Canonical {
        query: &query,
        ..*request
    };
    let (canonical, _) = signed.request(UNSIGNED_PAYLOAD);
    format!(
        "{}&X-Amz-Signature={}",
        query_string(&query),
        signature(credentials, scope, &canonical)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of AWS's documentation ("GET Object", first 10 bytes) signs to the
    /// signature it prints.
    #[test]
    fn signs_the_documented_example() {
        let credentials = Credentials {
            key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            token: None,
        };
        let scope = Scope {
            region: "us-east-1",
            amz_date: "20130524T000000Z",
        };
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let headers = [
            ("host".to_owned(), "examplebucket.s3.amazonaws.com".to_owned()),
            ("range".to_owned(), "bytes=0-9".to_owned()),
            ("x-amz-content-sha256".to_owned(), empty.to_owned()),
            ("x-amz-date".to_owned(), "20130524T000000Z".to_owned()),
        ];
        let request = Canonical {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
        };
        let header = authorization(&credentials, &scope, &request, empty);
        assert!(
            header.ends_with("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
            "{header}"
        );
    }
}
