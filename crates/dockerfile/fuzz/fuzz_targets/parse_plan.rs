//! Any text: parsing, planning (all stages, with build args) and checking
//! must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_dockerfile::{CheckOptions, NoResolver, PlanOptions, check, parse, plan};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(df) = parse(text) {
        let mut options = PlanOptions::default();
        options.build_args.insert("A".into(), "x y".into());
        let _ = plan(&df, &options, &NoResolver);
        options.all_stages = true;
        let _ = plan(&df, &options, &NoResolver);
    }
    let report = check(text, &CheckOptions::default());
    let _ = report.render(text);
});
