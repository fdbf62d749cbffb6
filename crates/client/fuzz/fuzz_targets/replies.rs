//! Any bytes as what a registry or its token server answers: a `WWW-Authenticate` header, a
//! token reply, an error body; and any text as a platform. Parsing returns, never panics.
#![no_main]

use std::time::{Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use rbuild_client::{auth, challenge, error, platform};

fuzz_target!(|data: &[u8]| {
    let _ = auth::parse_token_reply(data, SystemTime::now(), Instant::now());
    let _ = error::Details::parse(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = challenge::parse(text);
    let _ = platform::parse(text);
});
