//! Reading tar streams: USTAR, PAX and GNU headers, parsed the way Go's `archive/tar` (and so
//! docker and containerd) reads them.
//!
//! Our own reader rather than the `tar` crate's because PAX records must be split by their
//! length, not at newlines: extended attribute values are binary (a `security.capability`
//! value may well contain a `\n` byte), and a record misread there would also hide the `path`
//! record that follows it. Sparse files are not supported (no image tool writes them).

use std::collections::BTreeMap;
use std::io::{self, Read};

use crate::error::LayerError;
use crate::header::{BLOCK, padding};

/// The largest PAX or GNU long-name header accepted, as in Go.
const MAX_SPECIAL: u64 = 1 << 20;

/// One entry's header, with PAX and GNU extensions applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    /// The type flag, with the V7 conventions resolved (`'\0'` and `'7'` are `'0'`, or
    /// `'5'` for names ending in `/`).
    pub flag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Bytes of content that follow (0 for types that have none).
    pub size: u64,
    pub mtime: i64,
    pub device: (u32, u32),
    /// `SCHILY.xattr.*` records, in order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A tar stream being read entry by entry.
pub(crate) struct TarReader<R> {
    inner: R,
    /// Content and padding of the current entry not yet read.
    unread: u64,
    /// Padding after the current entry's content.
    pad: u64,
    done: bool,
}

fn malformed(reason: impl Into<String>) -> LayerError {
    LayerError::Malformed {
        reason: reason.into(),
    }
}

fn read_err(e: io::Error) -> LayerError {
    LayerError::stream("reading the layer", e)
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            unread: 0,
            pad: 0,
            done: false,
        }
    }

    /// The underlying reader, positioned after the last block read.
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    /// Reads the current entry's content.
    pub(crate) fn content(&mut self) -> Content<'_, R> {
        Content { reader: self }
    }

    /// The next entry, or `None` at the end of the archive.
    pub(crate) fn next(&mut self) -> Result<Option<RawEntry>, LayerError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.unread + self.pad)?;
        self.unread = 0;
        self.pad = 0;

        let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut xattrs = Vec::new();
        let mut gnu_name = None;
        let mut gnu_link = None;
        loop {
            let mut block = [0u8; BLOCK];
            if !self.read_block(&mut block)? {
                self.done = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                // The end: a second zero block should follow (a missing one is tolerated).
                let mut second = [0u8; BLOCK];
                if self.read_block(&mut second)? && second.iter().any(|&b| b != 0) {
                    return Err(malformed("a zero block is followed by data"));
                }
                self.done = true;
                return Ok(None);
            }
            if !checksum_ok(&block) {
                return Err(malformed(
                    "a tar header has a bad checksum (corrupt or not a tar)",
                ));
            }
            let flag = block[156];
            let size = numeric(&block[124..136]).map_err(|e| malformed(format!("bad size field: {e}")))?;
            let size = u64::try_from(size).map_err(|_| malformed("negative size"))?;
            match flag {
                b'x' | b'g' | b'L' | b'K' => {
                    if size > MAX_SPECIAL {
                        return Err(malformed(format!("extended header of {size} bytes is too large")));
                    }
                    let data = self.read_exact_vec(size)?;
                    self.skip(padding(size) as u64)?;
                    match flag {
                        b'x' => parse_pax(&data, &mut pax, &mut xattrs)?,
                        b'g' => {} // Global headers: ignored, as containerd does.
                        b'L' => gnu_name = Some(trim_nul(&data).to_vec()),
                        _ => gnu_link = Some(trim_nul(&data).to_vec()),
                    }
                    continue;
                }
                b'S' => return Err(unsupported_sparse()),
                _ => {}
            }
            if pax.keys().any(|k| k.starts_with(b"GNU.sparse.")) {
                return Err(unsupported_sparse());
            }
            let mut entry = self.parse(&block, flag, size)?;
            apply_pax(&mut entry, &pax)?;
            if let Some(name) = gnu_name {
                entry.path = name;
            }
            if let Some(link) = gnu_link {
                entry.link = link;
            }
            entry.xattrs = xattrs;
            if matches!(entry.flag, b'\0' | b'7') {
                entry.flag = if entry.path.ends_with(b"/") { b'5' } else { b'0' };
            }
            if !matches!(entry.flag, b'0' | b'7') {
                // Links, devices, directories and fifos have no content, whatever the size
                // field says (Go's "header-only types")... except unknown types, whose data
                // must still be skipped.
                if matches!(entry.flag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') {
                    entry.size = 0;
                }
            }
            self.unread = entry.size;
            self.pad = padding(entry.size) as u64;
            return Ok(Some(entry));
        }
    }

    fn parse(&self, block: &[u8; BLOCK], flag: u8, size: u64) -> Result<RawEntry, LayerError> {
        let field = |name: &str, range: std::ops::Range<usize>| {
            numeric(&block[range]).map_err(|e| malformed(format!("bad {name} field: {e}")))
        };
        let mut path = trim_nul(&block[0..100]).to_vec();
        let posix = &block[257..263] == b"ustar\0";
        if posix {
            let prefix = trim_nul(&block[345..500]);
            if !prefix.is_empty() {
                path = [prefix, b"/", &path].concat();
            }
        }
        let non_negative =
            |name: &str, v: i64| u64::try_from(v).map_err(|_| malformed(format!("negative {name}")));
        let device = |name: &str, range| -> Result<u32, LayerError> {
            let v = field(name, range)?;
            u32::try_from(v).map_err(|_| malformed(format!("{name} out of range")))
        };
        let (major, minor) = if posix || &block[257..265] == b"ustar  \0" {
            (device("devmajor", 329..337)?, device("devminor", 337..345)?)
        } else {
            (0, 0)
        };
        Ok(RawEntry {
            path,
            link: trim_nul(&block[157..257]).to_vec(),
            flag,
            mode: u32::try_from(field("mode", 100..108)? & 0o7777_7777).unwrap_or(0),
            uid: non_negative("uid", field("uid", 108..116)?)?,
            gid: non_negative("gid", field("gid", 116..124)?)?,
            size,
            mtime: field("mtime", 136..148)?,
            device: (major, minor),
            xattrs: Vec::new(),
        })
    }

    /// Reads one block; `false` at a clean end of stream.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, LayerError> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        match filled {
            0 => Ok(false),
            BLOCK => Ok(true),
            _ => Err(malformed(
                "the archive ends in the middle of a header (truncated)",
            )),
        }
    }

    fn read_exact_vec(&mut self, size: u64) -> Result<Vec<u8>, LayerError> {
        let mut data = Vec::with_capacity(size as usize);
        (&mut self.inner)
            .take(size)
            .read_to_end(&mut data)
            .map_err(read_err)?;
        if data.len() as u64 != size {
            return Err(malformed(
                "the archive ends inside an extended header (truncated)",
            ));
        }
        Ok(data)
    }

    fn skip(&mut self, n: u64) -> Result<(), LayerError> {
        if n == 0 {
            return Ok(());
        }
        let skipped = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(read_err)?;
        if skipped != n {
            return Err(malformed(
                "the archive ends inside an entry's content (truncated)",
            ));
        }
        Ok(())
    }
}

/// The current entry's content; reading past it gives end of file.
pub(crate) struct Content<'a, R> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for Content<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.reader.unread).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.reader.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside an entry's content (truncated)",
            ));
        }
        self.reader.unread -= n as u64;
        Ok(n)
    }
}

fn unsupported_sparse() -> LayerError {
    LayerError::Unsupported {
        path: String::new(),
        reason: "the archive holds a GNU sparse file; recreate it without --sparse".to_owned(),
    }
}

fn trim_nul(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

/// Whether the stored checksum matches the unsigned or (historic) signed byte sum.
pub(crate) fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Ok(stored) = octal(&block[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored == signed
}

/// A numeric field: base-256 when the high bit of its first byte is set (GNU), else octal.
fn numeric(field: &[u8]) -> Result<i64, String> {
    match field.first() {
        Some(&first) if first & 0x80 != 0 => {
            // Two's complement, big-endian, with the marker bit dropped from the first byte.
            let negative = first & 0x40 != 0;
            let mut value: i128 = if negative { -1 } else { 0 };
            for (i, &b) in field.iter().enumerate() {
                let b = if i == 0 { b & 0x7f } else { b };
                let b = if i == 0 && negative { b | 0x80 } else { b };
                value = (value << 8) | i128::from(b);
                if value > i128::from(i64::MAX) || value < i128::from(i64::MIN) {
                    return Err("base-256 number out of range".to_owned());
                }
            }
            Ok(value as i64)
        }
        _ => octal(field),
    }
}

/// An octal field: spaces and NULs around the digits are ignored; empty means 0 (as in Go).
fn octal(field: &[u8]) -> Result<i64, String> {
    let start = field
        .iter()
        .position(|&b| b != b' ' && b != 0)
        .unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(start, |e| e + 1);
    let digits = &field[start..end];
    if digits.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(digits).map_err(|_| format!("{digits:?} is not octal"))?;
    i64::from_str_radix(text, 8).map_err(|_| format!("{text:?} is not octal"))
}

/// Splits PAX records by their lengths into `pax` (last one wins) and `xattrs` (in order).
fn parse_pax(
    mut data: &[u8],
    pax: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    xattrs: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), LayerError> {
    let bad = || malformed("a PAX record is malformed");
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[space + 1..len - 1];
        let equals = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = (&record[..equals], &record[equals + 1..]);
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            xattrs.retain(|(k, _)| k != name);
            xattrs.push((name.to_vec(), value.to_vec()));
        } else {
            pax.insert(key.to_vec(), value.to_vec());
        }
        data = &data[len..];
    }
    Ok(())
}

fn apply_pax(entry: &mut RawEntry, pax: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), LayerError> {
    let number = |key: &str, value: &[u8]| -> Result<u64, LayerError> {
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                malformed(format!(
                    "PAX {key} {:?} is not a number",
                    String::from_utf8_lossy(value)
                ))
            })
    };
    for (key, value) in pax {
        match key.as_slice() {
            b"path" => entry.path = value.clone(),
            b"linkpath" => entry.link = value.clone(),
            b"size" => entry.size = number("size", value)?,
            b"uid" => entry.uid = number("uid", value)?,
            b"gid" => entry.gid = number("gid", value)?,
            b"mtime" => {
                let text = std::str::from_utf8(value).unwrap_or("");
                let seconds = text.split('.').next().unwrap_or("");
                entry.mtime = seconds
                    .parse()
                    .map_err(|_| malformed(format!("PAX mtime {text:?} is not a time")))?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{Header, flag};

    /// Name, type flag, content and extended attributes of an entry to write.
    type Spec<'a> = (&'a str, u8, &'a [u8], &'a BTreeMap<String, Vec<u8>>);

    fn archive(headers: &[Spec<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, content, xattrs) in headers {
            let header = Header {
                name,
                flag: *kind,
                mode: 0o4755,
                uid: 3_000_000,
                gid: 7,
                size: content.len() as u64,
                mtime: -1,
                link: if *kind == flag::SYMLINK { "../target" } else { "" },
                device: (0, 0),
                xattrs,
            };
            crate::header::append_entry(&mut out, &header, content);
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }

    #[test]
    fn reads_what_the_writer_writes_binary_xattrs_included() {
        let mut xattrs = BTreeMap::new();
        xattrs.insert(
            "security.capability".to_owned(),
            vec![1, b'\n', 0, b' ', b'=', 10],
        );
        let long = "x".repeat(150);
        let none = BTreeMap::new();
        let bytes = archive(&[
            (&long, flag::FILE, b"hello", &xattrs),
            ("l", flag::SYMLINK, b"", &none),
        ]);
        let mut reader = TarReader::new(bytes.as_slice());
        let first = reader.next().unwrap().unwrap();
        assert_eq!(first.path, long.as_bytes());
        assert_eq!(
            (first.mode, first.uid, first.gid, first.mtime, first.size),
            (0o4755, 3_000_000, 7, -1, 5)
        );
        assert_eq!(
            first.xattrs,
            vec![(b"security.capability".to_vec(), vec![1, b'\n', 0, b' ', b'=', 10])]
        );
        let mut content = Vec::new();
        reader.content().read_to_end(&mut content).unwrap();
        assert_eq!(content, b"hello");
        let second = reader.next().unwrap().unwrap();
        assert_eq!(
            (second.flag, second.link.as_slice()),
            (flag::SYMLINK, b"../target".as_slice())
        );
        assert!(reader.next().unwrap().is_none());
    }

    #[test]
    fn reads_gnu_tar_output() {
        // GNU long names, base-256 numbers and the "ustar  " magic, as tar-rs writes them.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o600);
        header.set_uid(1 << 40);
        header.set_mtime(1_000);
        header.set_cksum();
        let long = format!("{}/file", "d".repeat(200));
        builder.append_data(&mut header, &long, &b"abc"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let mut reader = TarReader::new(bytes.as_slice());
        let entry = reader.next().unwrap().unwrap();
        assert_eq!(entry.path, long.as_bytes());
        assert_eq!((entry.uid, entry.mtime, entry.size), (1 << 40, 1_000, 3));
        assert!(reader.next().unwrap().is_none());
    }

    #[test]
    fn refuses_corruption() {
        let none = BTreeMap::new();
        let mut bytes = Vec::new();
        Header {
            name: "f",
            flag: flag::FILE,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 5,
            mtime: 0,
            link: "",
            device: (0, 0),
            xattrs: &none,
        }
        .encode(&mut bytes)
        .unwrap();
        bytes.extend_from_slice(b"hello");
        bytes.resize(3 * BLOCK, 0);
        let mut reader = TarReader::new(&bytes[..BLOCK + 3]);
        reader.next().unwrap().unwrap();
        assert!(reader.content().read_to_end(&mut Vec::new()).is_err());
        bytes[0] ^= 1;
        assert!(TarReader::new(bytes.as_slice()).next().is_err());
        assert!(TarReader::new(&[1u8; 300][..]).next().is_err());
        assert!(TarReader::new(&[][..]).next().unwrap().is_none());
    }

    #[test]
    fn numbers_parse_like_go() {
        assert_eq!(octal(b"0000644\0"), Ok(0o644));
        assert_eq!(octal(b"  644 \0"), Ok(0o644));
        assert_eq!(octal(b"\0\0\0"), Ok(0));
        assert!(octal(b"12x").is_err());
        assert_eq!(numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0]), Ok(256));
        assert_eq!(numeric(&[0xff; 8]), Ok(-1));
    }

    #[test]
    fn pax_records_split_by_length() {
        let mut pax = BTreeMap::new();
        let mut xattrs = Vec::new();
        parse_pax(b"11 path=a\n\n14 mtime=-3.5\n", &mut pax, &mut xattrs).unwrap();
        assert_eq!(pax[&b"path".to_vec()], b"a\n");
        assert!(parse_pax(b"99 path=a\n", &mut pax, &mut xattrs).is_err());
        assert!(parse_pax(b"5 a\n", &mut pax, &mut xattrs).is_err());
    }
}
