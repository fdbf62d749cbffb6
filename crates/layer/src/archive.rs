//! `ADD local.tar.gz /dest/`: docker extracts a local file if, and only if, it is a tar —
//! plain or compressed with gzip, bzip2, xz or zstd. Anything else is copied as it is, even a
//! `.gz` whose content is not a tar.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::LayerError;
use crate::unpack::{UnpackOptions, UnpackStats, WhiteoutMode, decompressed, unpack};

/// The formats ADD extracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An uncompressed tar.
    Tar,
    /// A gzip-compressed tar.
    Gzip,
    /// A bzip2-compressed tar.
    Bzip2,
    /// An xz-compressed tar.
    Xz,
    /// A zstd-compressed tar.
    Zstd,
}

/// Whether 512 bytes are a tar header: the checksum field must match the header's bytes.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block[..512].iter().all(|&b| b == 0) {
        return false;
    }
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(recorded) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8) else {
        return false;
    };
    let computed: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    recorded == computed
}

/// Whether the file at `path` is an archive ADD would extract, and in which format.
pub fn sniff_archive(path: &Path) -> std::io::Result<Option<ArchiveFormat>> {
    let mut magic = [0u8; 6];
    let read = File::open(path)?.read(&mut magic)?;
    let format = match &magic[..read] {
        [0x1f, 0x8b, ..] => ArchiveFormat::Gzip,
        [b'B', b'Z', b'h', ..] => ArchiveFormat::Bzip2,
        [0xfd, b'7', b'z', b'X', b'Z', 0x00] => ArchiveFormat::Xz,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ArchiveFormat::Zstd,
        _ => ArchiveFormat::Tar,
    };
    let Ok(mut stream) = decompressed(File::open(path)?) else {
        return Ok(None);
    };
    let mut block = vec![0u8; 512];
    let mut filled = 0;
    while filled < 512 {
        match stream.read(&mut block[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    Ok(is_tar_header(&block[..filled]).then_some(format))
}

/// Extracts an archive into `dest`, as safely as [`unpack`]. Whiteout names are ordinary
/// files here, as in docker's ADD.
pub fn extract_archive(path: &Path, dest: &Path, options: &UnpackOptions) -> Result<UnpackStats, LayerError> {
    let file = File::open(path).map_err(|e| LayerError::io("opening", path, e))?;
    let options = UnpackOptions {
        whiteouts: WhiteoutMode::Literal,
        ..*options
    };
    unpack(decompressed(file)?, dest, &options)
}
