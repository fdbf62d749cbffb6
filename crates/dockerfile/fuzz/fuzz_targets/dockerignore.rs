//! The first line is a path, the rest a .dockerignore: compiling and
//! matching must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_dockerfile::dockerignore::Matcher;
use rbuild_dockerfile::paths::clean;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, patterns) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(m) = Matcher::from_dockerignore(patterns) {
        let path = clean(path);
        let _ = m.matches_or_parent_matches(&path);
        let _ = m.should_descend(&path);
        let _ = m.ignores_root();
    }
});
