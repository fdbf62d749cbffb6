//! Tar headers, byte by byte: a USTAR header block, preceded by a PAX extended header only
//! when a value does not fit USTAR (long or non-ASCII names and link names, large ids, sizes
//! or times) or when there are extended attributes.
//!
//! The encoding follows Go's `archive/tar` (what docker and containerd write): octal fields
//! zero-padded and NUL-terminated, numeric owners with empty user and group names, PAX
//! records sorted by key, the PAX header named `<dir>/PaxHeaders.0/<name>` with zero mode,
//! owner and time. Nothing depends on the machine or the moment.

use std::collections::BTreeMap;

/// The tar block size.
pub(crate) const BLOCK: usize = 512;

/// The largest value of an 8-byte octal field (mode, ids, device numbers).
const MAX_OCTAL_7: u64 = 0o7_777_777;
/// The largest value of a 12-byte octal field (size, mtime).
const MAX_OCTAL_11: u64 = 0o77_777_777_777;

/// Entry type flags.
pub(crate) mod flag {
    pub const FILE: u8 = b'0';
    pub const HARDLINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const PAX: u8 = b'x';
}

/// Everything a header says about one entry.
pub(crate) struct Header<'a> {
    /// The name as stored: the entry path, with a trailing `/` for directories.
    pub name: &'a str,
    pub flag: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub link: &'a str,
    pub device: (u32, u32),
    pub xattrs: &'a BTreeMap<String, Vec<u8>>,
}

impl Header<'_> {
    /// Appends the header (PAX header and its records first, if needed) to `out`. Fails, with
    /// a reason, on values no tar reader could read back.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        if self.link.contains('\0') {
            return Err("the link target contains a NUL byte".to_owned());
        }
        let (major, minor) = self.device;
        if u64::from(major) > MAX_OCTAL_7 || u64::from(minor) > MAX_OCTAL_7 {
            return Err(format!(
                "device number {major}:{minor} is too large for a tar header"
            ));
        }

        let mut records: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if !fits_ustar_string(self.name, 100) {
            records.insert("path".to_owned(), self.name.as_bytes().to_vec());
        }
        if !fits_ustar_string(self.link, 100) {
            records.insert("linkpath".to_owned(), self.link.as_bytes().to_vec());
        }
        if u64::from(self.uid) > MAX_OCTAL_7 {
            records.insert("uid".to_owned(), self.uid.to_string().into_bytes());
        }
        if u64::from(self.gid) > MAX_OCTAL_7 {
            records.insert("gid".to_owned(), self.gid.to_string().into_bytes());
        }
        if self.size > MAX_OCTAL_11 {
            records.insert("size".to_owned(), self.size.to_string().into_bytes());
        }
        let mtime_fits = u64::try_from(self.mtime).is_ok_and(|t| t <= MAX_OCTAL_11);
        if !mtime_fits {
            records.insert("mtime".to_owned(), self.mtime.to_string().into_bytes());
        }
        for (name, value) in self.xattrs {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!(
                    "extended attribute name {name:?} cannot be stored (empty, or has '=' or NUL)"
                ));
            }
            records.insert(format!("SCHILY.xattr.{name}"), value.clone());
        }

        if !records.is_empty() {
            let mut body = Vec::new();
            for (key, value) in &records {
                pax_record(&mut body, key, value);
            }
            let pax = Block {
                name: &pax_header_name(self.name),
                flag: flag::PAX,
                mode: 0,
                uid: 0,
                gid: 0,
                size: body.len() as u64,
                mtime: 0,
                link: b"",
                device: (0, 0),
            };
            out.extend_from_slice(&pax.encode());
            out.extend_from_slice(&body);
            out.resize(out.len() + padding(body.len() as u64), 0);
        }

        let name = ascii_prefix(self.name);
        let link = ascii_prefix(self.link);
        let block = Block {
            name: &name,
            flag: self.flag,
            mode: self.mode & 0o7777,
            uid: fit(u64::from(self.uid), MAX_OCTAL_7),
            gid: fit(u64::from(self.gid), MAX_OCTAL_7),
            size: fit(self.size, MAX_OCTAL_11),
            mtime: if mtime_fits { self.mtime.unsigned_abs() } else { 0 },
            link: &link,
            device: (major, minor),
        };
        out.extend_from_slice(&block.encode());
        Ok(())
    }
}

/// Appends `header` and `content` (padded) to `out`: a tar built by hand, for tests.
#[cfg(test)]
pub(crate) fn append_entry(out: &mut Vec<u8>, header: &Header<'_>, content: &[u8]) {
    header.encode(out).expect("a header the test can encode");
    out.extend_from_slice(content);
    out.resize(out.len() + padding(content.len() as u64), 0);
}

/// Zero bytes that follow `len` bytes of content to fill its last block.
pub(crate) fn padding(len: u64) -> usize {
    let rem = (len % BLOCK as u64) as usize;
    if rem == 0 { 0 } else { BLOCK - rem }
}

/// A value that fits its field, or 0 when a PAX record carries it instead (as Go does).
fn fit(value: u64, max: u64) -> u64 {
    if value <= max { value } else { 0 }
}

/// Whether `s` can be stored as is in a USTAR string field of `len` bytes.
fn fits_ustar_string(s: &str, len: usize) -> bool {
    s.len() <= len && s.is_ascii()
}

/// The ASCII characters of `s`, the best a USTAR field can do when a PAX record holds the
/// real value.
fn ascii_prefix(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii).collect()
}

/// `<dir>/PaxHeaders.0/<name>`, as Go names the extended header of an entry.
fn pax_header_name(name: &str) -> Vec<u8> {
    let (dir, file) = match name.rfind('/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    let mut full = format!("{dir}PaxHeaders.0");
    if !file.is_empty() {
        full.push('/');
        full.push_str(file);
    }
    let mut bytes = ascii_prefix(&full);
    bytes.truncate(100);
    while bytes.last() == Some(&b'/') {
        bytes.pop();
    }
    bytes
}

/// Appends `"<len> <key>=<value>\n"`, where `<len>` counts the whole record, itself included.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The fields of one 512-byte USTAR block, already fitted.
struct Block<'a> {
    name: &'a [u8],
    flag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &'a [u8],
    device: (u32, u32),
}

impl Block<'_> {
    fn encode(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        put_str(&mut b[0..100], self.name);
        put_octal(&mut b[100..108], u64::from(self.mode));
        put_octal(&mut b[108..116], self.uid);
        put_octal(&mut b[116..124], self.gid);
        put_octal(&mut b[124..136], self.size);
        put_octal(&mut b[136..148], self.mtime);
        b[156] = self.flag;
        put_str(&mut b[157..257], self.link);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        // uname (265..297) and gname (297..329) stay empty: owners are numeric only.
        put_octal(&mut b[329..337], u64::from(self.device.0));
        put_octal(&mut b[337..345], u64::from(self.device.1));
        // The checksum is computed with its own field as spaces, then written as six octal
        // digits, a NUL and a space.
        b[148..156].fill(b' ');
        let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
        put_octal(&mut b[148..155], sum);
        b[155] = b' ';
        b
    }
}

fn put_str(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal filling all but the last byte of `field`, which stays NUL.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    put_str(field, text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, xattrs: &'a BTreeMap<String, Vec<u8>>) -> Header<'a> {
        Header {
            name,
            flag: flag::FILE,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 5,
            mtime: 1_700_000_000,
            link: "",
            device: (0, 0),
            xattrs,
        }
    }

    /// Path, size and extended attributes of an entry read back.
    type ReadBack = (String, u64, Vec<(Vec<u8>, Vec<u8>)>);

    fn read_back(bytes: &[u8]) -> Vec<ReadBack> {
        let mut reader = crate::reader::TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(entry) = reader.next().unwrap() {
            out.push((String::from_utf8(entry.path).unwrap(), entry.size, entry.xattrs));
        }
        out
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for n in [0, 1, 4, 5, 6, 94, 95, 96, 97, 990, 994, 995, 996, 9_990, 9_995] {
            let mut record = Vec::new();
            pax_record(&mut record, "path", &vec![b'x'; n]);
            let text = String::from_utf8(record.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), record.len(), "{n}");
        }
    }

    #[test]
    fn plain_entry_is_one_ustar_block_like_go_writes_it() {
        let none = BTreeMap::new();
        let mut out = Vec::new();
        header("hello.txt", &none).encode(&mut out).unwrap();
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[100..108], b"0000644\0");
        assert_eq!(&out[124..136], b"00000000005\0");
        assert_eq!(&out[136..148], b"14524770400\0");
        assert_eq!(&out[257..265], b"ustar\x0000");
        assert_eq!(&out[265..329], &[0u8; 64][..], "no user or group names");
        assert_eq!(out[155], b' ');
    }

    #[test]
    fn long_and_unicode_names_and_xattrs_go_to_pax() {
        let mut xattrs = BTreeMap::new();
        xattrs.insert("security.capability".to_owned(), vec![1, 0, b'\n', 0xff]);
        xattrs.insert("user.a".to_owned(), b"v".to_vec());
        let long = format!("{}/file", "d".repeat(120));
        let mut out = Vec::new();
        header(&long, &xattrs).encode(&mut out).unwrap();
        let mut second = Vec::new();
        header("über", &BTreeMap::new()).encode(&mut second).unwrap();
        // A reader needs the content and the end blocks too.
        let mut stream = out.clone();
        for part in [b"hello".as_slice(), &second, b"world"] {
            stream.extend_from_slice(part);
            stream.resize(stream.len() + padding(stream.len() as u64), 0);
        }
        stream.resize(stream.len() + 2 * BLOCK, 0);
        let entries = read_back(&stream);
        assert_eq!(entries[0].0, long);
        let keys: Vec<_> = entries[0].2.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [b"security.capability".as_slice(), b"user.a"]);
        assert_eq!(entries[0].2[0].1, vec![1, 0, b'\n', 0xff]);
        // Records are sorted by key, as Go writes them.
        let text = String::from_utf8_lossy(&out[BLOCK..2 * BLOCK]).into_owned();
        let xattr_at = text.find("SCHILY.xattr.security").unwrap();
        assert!(xattr_at < text.find(" path=").unwrap());
        assert_eq!(entries[1].0, "über");
    }

    #[test]
    fn large_values_go_to_pax_and_zero_the_field() {
        let none = BTreeMap::new();
        let mut h = header("big", &none);
        h.size = 1 << 40;
        h.uid = 1 << 30;
        h.mtime = -5;
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        let body = String::from_utf8_lossy(&out[BLOCK..2 * BLOCK]).into_owned();
        assert!(
            body.contains(" mtime=-5\n")
                && body.contains(" size=1099511627776\n")
                && body.contains(" uid=1073741824\n"),
            "{body}"
        );
        let main = &out[out.len() - BLOCK..];
        assert_eq!(&main[124..136], b"00000000000\0");
    }

    #[test]
    fn pax_header_names_match_go() {
        assert_eq!(pax_header_name("a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_header_name("a/dir/"), b"a/dir/PaxHeaders.0");
        assert_eq!(pax_header_name("top"), b"PaxHeaders.0/top");
    }

    #[test]
    fn refuses_unstorable_values() {
        let mut xattrs = BTreeMap::new();
        xattrs.insert("a=b".to_owned(), Vec::new());
        assert!(header("f", &xattrs).encode(&mut Vec::new()).is_err());
        let none = BTreeMap::new();
        let mut h = header("f", &none);
        h.device = (1 << 22, 0);
        assert!(h.encode(&mut Vec::new()).is_err());
    }
}
