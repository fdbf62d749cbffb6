//! Arguments and argument parsers shared by the commands.

use clap::{Args, ValueEnum};
use rbuild_layer::Compression;

/// Parses `KEY=VALUE` (`--build-arg`, `--label`, `--build-context`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    Uncompressed,
}

/// How layers leave the local store (`build`, `push`).
#[derive(Args)]
pub struct CompressionArgs {
    /// Compression of layers leaving the store [default: gzip]; `build` keeps an
    /// image that only lands in the store uncompressed unless this is given
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
    /// Compression level (gzip 0-9, zstd 1-22)
    #[arg(long)]
    compression_level: Option<i32>,
}

impl CompressionArgs {
    /// Whether `--compression` was given.
    pub fn given(&self) -> bool {
        self.compression.is_some()
    }

    /// The compression of layers leaving the store: the one given, else gzip.
    pub fn shipped(&self) -> Compression {
        match (
            self.compression.unwrap_or(CompressionArg::Gzip),
            self.compression_level,
        ) {
            (CompressionArg::Gzip, level) => Compression::Gzip {
                level: level.map_or(6, |l| l.clamp(0, 9) as u32),
            },
            (CompressionArg::Zstd, level) => Compression::Zstd {
                level: level.unwrap_or(3).clamp(1, 22),
            },
            (CompressionArg::Uncompressed, _) => Compression::None,
        }
    }
}
