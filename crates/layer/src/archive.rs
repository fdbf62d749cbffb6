//! Archives for `ADD`: which local files are extracted, and extracting them as docker does.
//!
//! BuildKit's rule (`isArchivePath` in `solver/llbsolver/file/unpack.go`): a local source is
//! extracted when it is a regular file whose content, after decompression by magic bytes
//! (gzip, bzip2, xz, zstd, or none), starts with a tar header that Go's `tar.Reader.Next`
//! accepts (a valid header checksum). A `.tar.gz` name is not needed and not enough: a gzip
//! file that is not a tar is copied as it is.
//!
//! Extraction then uses `chrootarchive.Untar` with no whiteout conversion: `.wh.` names are
//! ordinary files there, absolute names are relative to the destination, `..` is resolved
//! lexically, and extended attributes are best effort. [`extract_archive`] does the same,
//! with [`unpack`](crate::unpack)'s safety (one deliberate difference: an entry whose parent
//! is a symbolic link is refused, where docker's chroot would follow it inside the root).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::compress::{self, Magic};
use crate::error::LayerError;
use crate::header::BLOCK;
use crate::unpack::{Flavor, UnpackOptions, UnpackStats, Unpacker};

/// The container format of a file that `ADD` extracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A plain tar.
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

/// Whether `ADD` extracts the local file `path`, and how it is compressed: `Some` iff it is a
/// regular file (not a link) holding a tar, possibly compressed. I/O errors opening or
/// reading it are errors; content that does not decompress is simply not an archive.
pub fn sniff_archive(path: &Path) -> io::Result<Option<ArchiveFormat>> {
    if !std::fs::symlink_metadata(path)?.is_file() {
        return Ok(None);
    }
    let file = File::open(path)?;
    let Ok((magic, mut reader)) = compress::decoder(Box::new(file)) else {
        return Ok(None);
    };
    let mut head = Vec::with_capacity(BLOCK);
    if (&mut reader).take(BLOCK as u64).read_to_end(&mut head).is_err() {
        return Ok(None);
    }
    if !is_tar_header(&head) {
        return Ok(None);
    }
    Ok(Some(match magic {
        Magic::None => ArchiveFormat::Tar,
        Magic::Gzip => ArchiveFormat::Gzip,
        Magic::Bzip2 => ArchiveFormat::Bzip2,
        Magic::Xz => ArchiveFormat::Xz,
        Magic::Zstd => ArchiveFormat::Zstd,
    }))
}

/// Whether `block` is a tar header Go's reader accepts: a whole non-zero block whose checksum
/// field matches its unsigned or signed byte sum.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < BLOCK || block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ' || b == 0)
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let rest_ok = field
        .iter()
        .skip_while(|&&b| b == b' ' || b == 0)
        .skip(digits.len())
        .all(|&b| b == b' ' || b == 0);
    let Some(stored) = std::str::from_utf8(&digits)
        .ok()
        .filter(|_| !digits.is_empty() && rest_ok)
        .and_then(|d| i64::from_str_radix(d, 8).ok())
    else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block[..BLOCK].iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored == signed
}

/// Extracts the archive at `path` (any [`ArchiveFormat`]) into `dest`, as docker's `ADD`
/// does (see the module documentation). `options.whiteouts` is ignored: `ADD` gives `.wh.`
/// names no meaning.
pub fn extract_archive(path: &Path, dest: &Path, options: &UnpackOptions) -> Result<UnpackStats, LayerError> {
    let file = File::open(path).map_err(|e| LayerError::io("opening", path, e))?;
    let (_, reader) = compress::decoder(Box::new(file)).map_err(|e| LayerError::io("reading", path, e))?;
    Unpacker::new(dest, options, Flavor::Archive)?.run(reader)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::unpack::WhiteoutMode;

    fn tar_with(name: &str, content: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, content).unwrap();
        builder.into_inner().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn sniffs_by_content_like_buildkit() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with("a.txt", b"hello");
        let cases: Vec<(&str, Vec<u8>, Option<ArchiveFormat>)> = vec![
            ("plain.bin", tar.clone(), Some(ArchiveFormat::Tar)),
            ("x.tar.gz", gz(&tar), Some(ArchiveFormat::Gzip)),
            (
                "x.zst",
                zstd::encode_all(tar.as_slice(), 3).unwrap(),
                Some(ArchiveFormat::Zstd),
            ),
            ("text.gz", gz(b"just some text, not a tar"), None),
            ("empty.tar", Vec::new(), None),
            ("zeros.tar", vec![0; 1024], None),
            ("readme.tar", b"hello".repeat(200), None),
            ("truncated.tar", tar[..300].to_vec(), None),
        ];
        for (name, bytes, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(sniff_archive(&path).unwrap(), expected, "{name}");
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("plain.bin"), &link).unwrap();
        assert_eq!(sniff_archive(&link).unwrap(), None);
        assert!(sniff_archive(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn extracts_like_docker_untar() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("/abs/file", b"a".as_slice()),
            ("x/../y", b"b"),
            (".wh.keep", b"c"),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            // Write the raw name: tar::Builder refuses these.
            header.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, gz(&builder.into_inner().unwrap())).unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let options = UnpackOptions {
            whiteouts: WhiteoutMode::Apply,
            same_owner: false,
        };
        let stats = extract_archive(&archive, &dest, &options).unwrap();
        assert_eq!(stats.files, 3);
        assert_eq!(std::fs::read(dest.join("abs/file")).unwrap(), b"a");
        assert_eq!(std::fs::read(dest.join("y")).unwrap(), b"b");
        assert_eq!(std::fs::read(dest.join(".wh.keep")).unwrap(), b"c");
    }
}
