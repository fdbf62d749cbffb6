//! Any bytes as a layer tar, unpacked in both whiteout modes with owners restored: unpacking
//! returns (the layer or an error), never panics, and writes nothing outside the
//! destination.
//!
//! The sandbox is a fixed path, `/tmp/rbuild-fuzz-unpack`, so seeds can aim `..` names and
//! absolute link targets at `outside/`, the directory beside the destination, which holds
//! one file that must stay as it is.
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rbuild_layer::{UnpackOptions, WhiteoutMode, unpack};

const SANDBOX: &str = "/tmp/rbuild-fuzz-unpack";
const CANARY: &[u8] = b"must stay as it is";

/// What the sandbox holds besides the destination: `outside/canary`, and nothing else.
fn check_untouched(sandbox: &Path, input: &[u8]) {
    let mut names: Vec<String> = fs::read_dir(sandbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["dest", "outside"],
        "wrote beside the destination: {input:?}"
    );
    let outside: Vec<_> = fs::read_dir(sandbox.join("outside")).unwrap().collect();
    assert_eq!(outside.len(), 1, "wrote into outside/: {input:?}");
    let canary = fs::symlink_metadata(sandbox.join("outside/canary")).unwrap();
    assert!(canary.is_file(), "replaced outside/canary: {input:?}");
    assert_eq!(
        fs::read(sandbox.join("outside/canary")).unwrap(),
        CANARY,
        "{input:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let sandbox = Path::new(SANDBOX);
    let dest = sandbox.join("dest");
    fs::create_dir_all(sandbox.join("outside")).unwrap();
    fs::write(sandbox.join("outside/canary"), CANARY).unwrap();
    for whiteouts in [WhiteoutMode::Apply, WhiteoutMode::Overlay] {
        let _ = fs::remove_dir_all(&dest);
        fs::create_dir(&dest).unwrap();
        let options = UnpackOptions {
            whiteouts,
            same_owner: true,
        };
        let _ = unpack(data, &dest, &options);
        check_untouched(sandbox, data);
    }
});
