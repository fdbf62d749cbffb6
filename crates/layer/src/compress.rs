//! Compression formats: the choice for written layers, zstd encoding, and decompression of
//! any layer or archive by its magic bytes.

use std::io::{self, Cursor, Read, Write};

use rbuild_oci::media_type;

use crate::error::LayerError;

/// The gzip level used when none is given: Go's default (what docker and BuildKit use).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// The zstd level used when none is given: zstd's default (BuildKit's too).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How a layer is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar ([`media_type::OCI_LAYER_TAR`]).
    None,
    /// gzip, deflated on all cores ([`media_type::OCI_LAYER_GZIP`]).
    Gzip {
        /// 0 (stored) to 9 (smallest); see [`DEFAULT_GZIP_LEVEL`].
        level: u32,
    },
    /// zstd ([`media_type::OCI_LAYER_ZSTD`]).
    Zstd {
        /// zstd's levels, negative (fastest) to 22 (smallest); see [`DEFAULT_ZSTD_LEVEL`].
        level: i32,
    },
}

impl Default for Compression {
    /// gzip at [`DEFAULT_GZIP_LEVEL`], what every client can pull.
    fn default() -> Compression {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => media_type::OCI_LAYER_TAR,
            Compression::Gzip { .. } => media_type::OCI_LAYER_GZIP,
            Compression::Zstd { .. } => media_type::OCI_LAYER_ZSTD,
        }
    }

    /// Checks the level is one the compressor accepts.
    pub fn validate(self) -> Result<(), LayerError> {
        match self {
            Compression::None => Ok(()),
            Compression::Gzip { level } if level <= 9 => Ok(()),
            Compression::Gzip { level } => Err(LayerError::InvalidOption(format!(
                "gzip level {level} is out of range: use 0 (no compression) to 9 (smallest)"
            ))),
            Compression::Zstd { level } => {
                let range = zstd::compression_level_range();
                if range.contains(&level) {
                    Ok(())
                } else {
                    Err(LayerError::InvalidOption(format!(
                        "zstd level {level} is out of range: use {} to {}",
                        range.start(),
                        range.end()
                    )))
                }
            }
        }
    }
}

/// Compresses what `produce` writes with zstd at `level` on `workers` threads into `out`.
///
/// Always multi-threaded (at least one worker), because zstd's multi-threaded format depends
/// on the job size, not on the worker count, while its single-threaded output differs from
/// it: so any thread count gives the same bytes (tested).
pub(crate) fn zstd<T>(
    level: i32,
    workers: usize,
    out: &mut dyn Write,
    produce: impl FnOnce(&mut dyn Write) -> Result<T, LayerError>,
) -> Result<T, LayerError> {
    let setup = |e| LayerError::stream("starting zstd", e);
    let mut encoder = zstd::stream::write::Encoder::new(out, level).map_err(setup)?;
    encoder
        .multithread(u32::try_from(workers.max(1)).unwrap_or(u32::MAX))
        .map_err(setup)?;
    encoder.include_checksum(true).map_err(setup)?;
    let value = produce(&mut encoder)?;
    encoder
        .finish()
        .map_err(|e| LayerError::stream("finishing the zstd stream", e))?;
    Ok(value)
}

/// A compression format recognised by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Magic {
    Gzip,
    Zstd,
    Bzip2,
    Xz,
    None,
}

impl Magic {
    /// Recognises gzip, zstd, bzip2 and xz the way docker's `DetectCompression` does.
    pub(crate) fn of(head: &[u8]) -> Magic {
        match head {
            [0x1f, 0x8b, 0x08, ..] => Magic::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Magic::Zstd,
            [b'B', b'Z', b'h', ..] => Magic::Bzip2,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Magic::Xz,
            _ => Magic::None,
        }
    }
}

/// Reads up to `n` bytes (fewer only at the end of the stream).
fn read_head(reader: &mut dyn Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    reader.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// A reader of the decompressed stream, for any of the formats; the bytes already read to
/// detect the format are put back in front.
pub(crate) fn decoder(mut reader: Box<dyn Read + Send>) -> io::Result<(Magic, Box<dyn Read + Send>)> {
    let head = read_head(&mut reader, 6)?;
    let magic = Magic::of(&head);
    let whole: Box<dyn Read + Send> = Box::new(Cursor::new(head).chain(reader));
    let decoded: Box<dyn Read + Send> = match magic {
        Magic::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(whole))),
        Magic::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
        Magic::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
        Magic::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(whole)),
        Magic::None => whole,
    };
    Ok((magic, decoded))
}

/// The uncompressed content of a layer or archive: gzip, zstd, bzip2 and xz are recognised by
/// their magic bytes and decoded; anything else is passed through as a plain tar.
///
/// Concatenated gzip members and zstd frames are read as one stream.
pub fn decompressed(reader: impl Read + Send + 'static) -> Result<Box<dyn Read + Send>, LayerError> {
    decoder(Box::new(reader))
        .map(|(_, r)| r)
        .map_err(|e| LayerError::stream("reading the start of the layer", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decompressed(Cursor::new(data.to_vec()))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn decompresses_every_format_by_content() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        assert_eq!(through(&gz.finish().unwrap()), data);

        assert_eq!(through(&zstd::encode_all(data.as_slice(), 3).unwrap()), data);

        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&data).unwrap();
        assert_eq!(through(&bz.finish().unwrap()), data);

        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data).unwrap();
        assert_eq!(through(&xz.finish().unwrap()), data);

        assert_eq!(through(&data), data);
        assert_eq!(through(b"ab"), b"ab");
        assert_eq!(through(b""), b"");
    }

    #[test]
    fn reads_concatenated_gzip_members() {
        let mut both = Vec::new();
        for part in [b"one ".as_slice(), b"two"] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(part).unwrap();
            both.extend(gz.finish().unwrap());
        }
        assert_eq!(through(&both), b"one two");
    }

    fn zstd_bytes(data: &[u8], level: i32, workers: usize) -> Vec<u8> {
        let mut out = Vec::new();
        zstd(level, workers, &mut out, |w| {
            for chunk in data.chunks(100_003) {
                w.write_all(chunk).map_err(|e| LayerError::stream("test", e))?;
            }
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn zstd_output_does_not_depend_on_workers() {
        // Large enough for several zstd jobs (the job size is a few MiB at these levels).
        let mut state = 88172645463325252u64;
        let data: Vec<u8> = (0..24 << 20)
            .map(|i: u32| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if state.is_multiple_of(3) {
                    (state >> 32) as u8
                } else {
                    (i / 64 % 26) as u8 + b'a'
                }
            })
            .collect();
        for level in [1, 3] {
            let one = zstd_bytes(&data, level, 1);
            for workers in [2, 4] {
                assert!(
                    one == zstd_bytes(&data, level, workers),
                    "level {level}, {workers} workers"
                );
            }
            assert_eq!(zstd::decode_all(one.as_slice()).unwrap(), data);
        }
    }

    #[test]
    fn validates_levels() {
        assert!(Compression::Gzip { level: 10 }.validate().is_err());
        assert!(Compression::Zstd { level: 23 }.validate().is_err());
        Compression::Zstd { level: -1 }.validate().unwrap();
        Compression::default().validate().unwrap();
    }
}
