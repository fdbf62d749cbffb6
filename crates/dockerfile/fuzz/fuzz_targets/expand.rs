//! Word expansion in every lexer mode: no panics, bounded time.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rbuild_dockerfile::expand::Lexer;

fuzz_target!(|data: &[u8]| {
    let Ok(word) = std::str::from_utf8(data) else {
        return;
    };
    let env: BTreeMap<String, String> = [
        ("A", "archive.tar.gz"),
        ("EMPTY", ""),
        ("P", "/usr/local/bin:/usr/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for escape in ['\\', '`'] {
        let lexer = Lexer::new(escape);
        let _ = lexer.process_word(word, &env);
        let _ = lexer.process_words(word, &env);
        let raw = lexer.raw_quotes(true).raw_escapes(true).skip_unset_env(true);
        let _ = raw.process_words(word, &env);
        let _ = lexer.skip_process_quotes(true).process_word(word, &env);
    }
});
