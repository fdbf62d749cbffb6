//! A SHA-256 whose state can be written into an object and resumed by another process.
//!
//! An upload's next chunk may reach another replica, which must continue the hash where the
//! last one stopped without reading back what is already stored. `sha2::Sha256` keeps its
//! state private, so this holds the eight state words, the length and the unfinished block
//! itself and feeds whole blocks to `sha2::compress256`: the same (SHA-NI accelerated)
//! compression function `Sha256` runs, so hashing costs the same and resuming costs nothing
//! but reading these 100 bytes.

use rbuild_oci::Digest;
use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;

const BLOCK: usize = 64;

/// The initial hash value of SHA-256 (FIPS 180-4, 5.3.3).
const INIT: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A running SHA-256, serializable between chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha256State {
    state: [u32; 8],
    /// Bytes hashed so far, the unfinished block included.
    len: u64,
    /// The unfinished block: the last `len % 64` bytes, not yet compressed.
    #[serde(with = "hex_bytes")]
    pending: Vec<u8>,
}

impl Default for Sha256State {
    fn default() -> Sha256State {
        Sha256State {
            state: INIT,
            len: 0,
            pending: Vec::with_capacity(BLOCK),
        }
    }
}

impl Sha256State {
    /// Feeds more bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < BLOCK {
                return;
            }
            compress_blocks(&mut self.state, &self.pending);
            self.pending.clear();
        }
        let whole = bytes.len() - bytes.len() % BLOCK;
        let (blocks, rest) = bytes.split_at(whole);
        compress_blocks(&mut self.state, blocks);
        self.pending.extend_from_slice(rest);
    }

    /// The digest of everything fed so far (the state itself is kept, so more may follow).
    pub fn digest(&self) -> Digest {
        let mut state = self.state;
        let mut tail = self.pending.clone();
        tail.push(0x80);
        let padded = if tail.len() > BLOCK - 8 { 2 * BLOCK } else { BLOCK };
        tail.resize(padded - 8, 0);
        tail.extend_from_slice(&(self.len * 8).to_be_bytes());
        compress_blocks(&mut state, &tail);
        let mut raw = [0u8; 32];
        for (out, word) in raw.chunks_exact_mut(4).zip(state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        Digest::sha256_from_raw(&raw)
    }
}

/// Blocks handed to `compress256` per call: copying them into an array of blocks costs a
/// memcpy of 4 KiB, which is noise beside hashing them.
const BATCH: usize = 64;

/// Compresses `bytes`, a whole number of blocks, into `state`.
fn compress_blocks(state: &mut [u32; 8], bytes: &[u8]) {
    let mut batch = [GenericArray::<u8, U64>::default(); BATCH];
    for run in bytes.chunks(BATCH * BLOCK) {
        let count = run.len() / BLOCK;
        for (slot, block) in batch.iter_mut().zip(run.chunks_exact(BLOCK)) {
            slot.copy_from_slice(block);
        }
        sha2::compress256(state, &batch[..count]);
    }
}

/// The unfinished block as hex in the upload's state object.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every split of the input, resumed through JSON in between, hashes as one pass does.
    #[test]
    fn resumed_state_hashes_as_one_pass() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 128, 4096, 4097, 10_000] {
            let whole = &data[..len];
            let expected = Digest::sha256_of(whole);
            for split in [0, 1, 63, 64, len / 2, len] {
                let split = split.min(len);
                let mut first = Sha256State::default();
                first.update(&whole[..split]);
                let saved = serde_json::to_string(&first).unwrap();
                let mut second: Sha256State = serde_json::from_str(&saved).unwrap();
                second.update(&whole[split..]);
                assert_eq!(second.digest(), expected, "len {len} split {split}");
            }
        }
    }
}
