//! Any text as what a client sends before a handler runs: a request path, a `Range` header,
//! a chunk's `Content-Range`. Parsing returns, never panics; a route's repository name has
//! no component that could step out of the storage root; a satisfiable range lies inside
//! the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_registry::http::{parse_content_range, parse_range};
use rbuild_registry::route::{self, Route};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(route)) = route::parse(text) {
        let name = match &route {
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
            _ => None,
        };
        for component in name.iter().flat_map(|n| n.components()) {
            assert!(
                !component.is_empty() && component != "." && component != "..",
                "{text:?} routed with the component {component:?}"
            );
        }
    }
    for size in [0, 1, 1000, u64::MAX] {
        if let Some(range) = parse_range(text, size) {
            assert!(
                range.start < range.end && range.end <= size,
                "{text:?} of {size}: {range:?}"
            );
        }
    }
    if let Some((_, length)) = parse_content_range(text) {
        assert!(length > 0, "{text:?}");
    }
});
