//! Response bodies read whole — tokens, manifests, error documents — with a limit, so a
//! registry cannot make the client hold more than the document can be.

use reqwest::Response;

use crate::error::chain;

/// Why a response body could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// It is longer than the limit.
    TooLarge,
    /// The transfer failed.
    Transfer(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge => f.write_str("the body is larger than expected"),
            ReadError::Transfer(reason) => f.write_str(reason),
        }
    }
}

/// Reads a whole response body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(mut response: Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Transfer(chain(&e)))?
    {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
