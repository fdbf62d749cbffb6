//! `--metrics-file`: per-step numbers for layer-cache benchmarking.

use serde::Serialize;

/// One step's numbers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepMetrics {
    /// Build-wide step number.
    pub step: usize,
    /// The stage's name or index.
    pub stage: String,
    /// The instruction.
    pub instruction: String,
    /// Its Dockerfile line.
    pub line: usize,
    /// Wall time, milliseconds.
    pub duration_ms: f64,
    /// `hit`, `miss` or `none` (steps that only change the config are not cached).
    pub cache: String,
    /// Why it missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miss_reason: Option<String>,
    /// The remote cache a hit came from (absent: the local store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_from: Option<String>,
    /// Bytes of source files read to hash them (0 when the stat cache answered).
    pub bytes_hashed: u64,
    /// Bytes of layers a remote cache gave that the step needed the files of, fetched.
    pub bytes_fetched: u64,
    /// Uncompressed bytes of the layer written.
    pub bytes_written: u64,
    /// Compressed bytes of the layer written.
    pub bytes_compressed: u64,
    /// Of `bytes_written`, those whose compressed blocks were copied from the layer this
    /// step made last time instead of compressed again.
    pub bytes_reused: u64,
    /// The layer's digest, for steps that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The layer's compressed size.
    pub layer_size: u64,
    /// Of the wall time, milliseconds spent turning the step's changes into the layer (reading
    /// them, tar, compression, hashing), for comparing with `tar | pigz`.
    pub layer_ms: f64,
}

/// The whole build's numbers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BuildMetrics {
    /// When the build started, milliseconds since the Unix epoch: builds that ran at once
    /// (`rbuild bake`'s targets) overlap.
    pub started_ms: u64,
    /// Wall time, milliseconds.
    pub duration_ms: f64,
    /// Bytes read to hash the context.
    pub context_bytes_hashed: u64,
    /// Files in the context (after .dockerignore).
    pub context_files: usize,
    /// Cache hits.
    pub cache_hits: usize,
    /// Cache misses.
    pub cache_misses: usize,
    /// Bytes of layers fetched from remote caches, all steps.
    pub cache_bytes_fetched: u64,
    /// The image's manifest digest.
    pub image: String,
    /// Per step.
    pub steps: Vec<StepMetrics>,
}
