//! gzip on every core, pigz-style, with output that does not depend on the number of cores,
//! and that a rebuild can copy from the previous layer wherever the input is unchanged.
//!
//! The uncompressed stream is cut into blocks at content-defined places (see [`Cutter`]):
//! between [`MIN_BLOCK`] and [`MAX_BLOCK`] bytes, about 320 KiB on average. Each block is
//! raw-deflated on its own, primed with the last 32 KiB of the stream before it as the
//! dictionary, and ends with a sync flush (the last one with the final deflate block), so the
//! pieces join into one deflate stream. Around it go a fixed gzip header (mtime 0, OS
//! "unknown", as Go writes it) and a trailer with the CRC-32 combined from the blocks' CRCs
//! and the length. The result is one ordinary gzip member: Go's `compress/gzip` (docker,
//! containerd), `gzip -t` and single-member decoders all read it.
//!
//! A block's compressed bytes depend only on its input, its dictionary, the level and
//! whether it is the last, so they are reusable: [`compress`] names every block by a hash of
//! those ([`BlockIndex`]), and given the index and blob of an earlier layer
//! ([`PreviousBlocks`]) copies the blocks it already has instead of deflating them again.
//! The output is the same bytes either way. Because the cuts follow the content, a change in
//! one file moves only the boundaries next to it: rebuilding a 100 MB layer after a one-file
//! change deflates one or two blocks.
//!
//! Three kinds of thread work on a layer: the producer (the tar writer, the diff ID hash and
//! the cutting), `threads` workers (block hashing, then deflating or copying), and the
//! calling thread, which writes blocks out in order. Memory stays bounded: the producer waits
//! once `threads + 2` blocks are queued or being worked on, so at most about
//! `(threads + 3) × 2 × MAX_BLOCK` bytes are held (input and output).
//!
//! Why one long file: the cutter, the parallel compressor and block reuse write one stream
//! format, and its invariants (dictionary, sync flush, CRC combination) are stated once here.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use flate2::{Compress, FlushCompress, Status};
use sha2::{Digest as _, Sha256};

use crate::error::LayerError;

/// The fewest uncompressed bytes in a block (but the last). Part of the output format, as
/// are [`MAX_BLOCK`] and the cutting rule (see [`FORMAT_VERSION`](crate::FORMAT_VERSION)).
pub const MIN_BLOCK: usize = 64 * 1024;

/// The most uncompressed bytes in a block.
pub const MAX_BLOCK: usize = 1024 * 1024;

/// Deflate's window: the most history a block can refer back to.
const WINDOW: usize = 32 * 1024;

/// How many of the rolling hash's top bits must be clear for a block to end: one place in
/// 256 KiB, past [`MIN_BLOCK`].
const CUT_BITS: u32 = 18;

/// The "gear" of the rolling hash: a fixed pseudo-random number per byte value.
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x7262_7569_6c64_2d67; // "rbuild-g"
    let mut i = 0;
    while i < 256 {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// Decides where blocks end, from the content: a gear hash (`h = (h << 1) + GEAR[byte]`)
/// rolls over the stream, and a block ends after a byte where its top [`CUT_BITS`] bits are
/// zero, once the block holds [`MIN_BLOCK`] bytes, or at [`MAX_BLOCK`]. Each shift pushes a
/// byte's contribution one bit further up, so the top bits depend on the last 64 bytes
/// only: the same content cuts at the same places wherever it sits in the stream, which is
/// what lets blocks after a change line up with the previous layer's again.
#[derive(Default)]
struct Cutter {
    hash: u64,
}

impl Cutter {
    /// Where the block holding `len` bytes so far ends within `data`: after `Some(n)` of its
    /// bytes, or beyond it (`None`).
    fn cut(&mut self, len: usize, data: &[u8]) -> Option<usize> {
        // Bytes more than 64 before MIN_BLOCK cannot affect a cut: skip hashing them.
        let start = (MIN_BLOCK - 64).saturating_sub(len).min(data.len());
        for (i, &byte) in data.iter().enumerate().skip(start) {
            self.hash = (self.hash << 1).wrapping_add(GEAR[byte as usize]);
            let size = len + i + 1;
            if (size >= MIN_BLOCK && self.hash >> (64 - CUT_BITS) == 0) || size == MAX_BLOCK {
                self.hash = 0;
                return Some(i + 1);
            }
        }
        None
    }
}

/// A block's name: SHA-256 of everything its compressed bytes depend on.
pub type BlockKey = [u8; 32];

/// Where one block of a gzip layer sits, and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    /// Its name (see the module documentation).
    pub key: BlockKey,
    /// Offset of its compressed bytes in the blob.
    pub offset: u64,
    /// Compressed length.
    pub size: u32,
    /// Uncompressed length.
    pub uncompressed: u32,
    /// CRC-32 of the uncompressed bytes.
    pub crc: u32,
}

/// The blocks of one gzip layer, in order: what [`compress`] reports, and what a later
/// layer reuses through [`PreviousBlocks`]. Kept by the builder next to its cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockIndex {
    /// The blocks.
    pub blocks: Vec<BlockRecord>,
}

/// Bytes per record in [`BlockIndex::to_bytes`].
const RECORD_BYTES: usize = 32 + 8 + 4 + 4 + 4;

impl BlockIndex {
    /// A compact binary form: fixed-size little-endian records.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.blocks.len() * RECORD_BYTES);
        for block in &self.blocks {
            out.extend_from_slice(&block.key);
            out.extend_from_slice(&block.offset.to_le_bytes());
            out.extend_from_slice(&block.size.to_le_bytes());
            out.extend_from_slice(&block.uncompressed.to_le_bytes());
            out.extend_from_slice(&block.crc.to_le_bytes());
        }
        out
    }

    /// Reads [`to_bytes`](Self::to_bytes)' form; `None` when it is not that.
    pub fn from_bytes(bytes: &[u8]) -> Option<BlockIndex> {
        if !bytes.len().is_multiple_of(RECORD_BYTES) {
            return None;
        }
        let blocks = bytes
            .chunks_exact(RECORD_BYTES)
            .map(|r| {
                let u32_at = |at: usize| u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
                let mut key = [0u8; 32];
                key.copy_from_slice(&r[..32]);
                let mut offset = [0u8; 8];
                offset.copy_from_slice(&r[32..40]);
                BlockRecord {
                    key,
                    offset: u64::from_le_bytes(offset),
                    size: u32_at(40),
                    uncompressed: u32_at(44),
                    crc: u32_at(48),
                }
            })
            .collect();
        Some(BlockIndex { blocks })
    }
}

/// An earlier gzip layer's blocks, ready to be copied into a new layer.
#[derive(Debug)]
pub struct PreviousBlocks {
    blocks: HashMap<BlockKey, BlockRecord>,
    blob: File,
}

impl PreviousBlocks {
    /// The blocks `index` describes, read from `blob` (the layer it describes).
    pub fn new(index: &BlockIndex, blob: File) -> PreviousBlocks {
        PreviousBlocks {
            blocks: index.blocks.iter().map(|b| (b.key, *b)).collect(),
            blob,
        }
    }

    /// The compressed bytes of the block named `key` with input `data`, if there is one. The
    /// length and CRC must match too, so a stale index costs a deflate, not a wrong layer.
    fn copy(
        &self,
        key: &BlockKey,
        data: &[u8],
        crc: &crc32fast::Hasher,
        buffers: &Buffers,
    ) -> Option<Vec<u8>> {
        let block = self.blocks.get(key)?;
        if block.uncompressed as usize != data.len() || block.crc != crc.clone().finalize() {
            return None;
        }
        let mut bytes = buffers.take(block.size as usize);
        bytes.resize(block.size as usize, 0);
        match self.blob.read_exact_at(&mut bytes, block.offset) {
            Ok(()) => Some(bytes),
            Err(_) => {
                buffers.give(bytes);
                None
            }
        }
    }
}

/// Block-sized buffers passed back for reuse once written out. A layer moves hundreds of
/// megabytes through 1 MiB blocks; allocating each afresh made the kernel zero a new page
/// for nearly every byte (a quarter of a 100 MB layer's CPU time), where a handful of
/// recycled buffers costs nothing.
#[derive(Default)]
struct Buffers(Mutex<Vec<Vec<u8>>>);

impl Buffers {
    /// The most buffers kept: more than are ever in flight.
    const KEPT: usize = 64;

    /// An empty buffer, recycled when one is spare.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let spare = self.0.lock().ok().and_then(|mut spare| spare.pop());
        let mut buffer = spare.unwrap_or_default();
        buffer.clear();
        buffer.reserve(capacity);
        buffer
    }

    /// Returns a buffer for reuse.
    fn give(&self, buffer: Vec<u8>) {
        if let Ok(mut spare) = self.0.lock()
            && spare.len() < Self::KEPT
        {
            spare.push(buffer);
        }
    }
}

/// One block to deflate.
struct Job {
    data: Vec<u8>,
    /// The stream's last bytes before the block (up to [`WINDOW`]): the dictionary.
    dictionary: Arc<Vec<u8>>,
    last: bool,
    reply: SyncSender<io::Result<Deflated>>,
}

/// A deflated block, its name and the CRC-32 of its input.
struct Deflated {
    bytes: Vec<u8>,
    key: BlockKey,
    crc: crc32fast::Hasher,
    len: usize,
    copied: bool,
}

/// What [`compress`] did besides writing.
#[derive(Debug, Default)]
pub(crate) struct Compressed {
    /// Every block, in order.
    pub index: BlockIndex,
    /// Uncompressed bytes copied from the previous layer instead of deflated.
    pub reused: u64,
}

/// The gzip header: no name, no extra fields, mtime 0, OS 255 ("unknown"), and the XFL byte
/// Go sets for its best-speed and best-compression levels.
fn header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// Compresses what `produce` writes into one gzip member on `out`, deflating on `threads`
/// worker threads (at least one) the blocks `previous` does not have, and returns what
/// `produce` returned.
pub(crate) fn compress<T: Send>(
    level: u32,
    threads: usize,
    previous: Option<&PreviousBlocks>,
    out: &mut dyn Write,
    produce: impl FnOnce(&mut dyn Write) -> Result<T, LayerError> + Send,
) -> Result<(T, Compressed), LayerError> {
    let threads = threads.max(1);
    let write_err = |e| LayerError::stream("writing the compressed layer", e);
    out.write_all(&header(level)).map_err(write_err)?;

    let buffers = &Buffers::default();
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = sync_channel::<Job>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        // Replies in stream order; its bound is what bounds memory.
        let (order_tx, order_rx) = sync_channel::<Receiver<io::Result<Deflated>>>(threads + 1);

        for _ in 0..threads {
            let jobs = Arc::clone(&job_rx);
            scope.spawn(move || worker(level, previous, &jobs, buffers));
        }
        let producer = scope.spawn(move || {
            let mut blocks = BlockWriter {
                buffer: buffers.take(MAX_BLOCK),
                buffers,
                dictionary: Arc::new(Vec::new()),
                cutter: Cutter::default(),
                jobs: job_tx,
                order: order_tx,
            };
            let value = produce(&mut blocks)?;
            blocks
                .send(true)
                .map_err(|e| LayerError::stream("compressing the layer", e))?;
            Ok(value)
        });

        // Write the blocks out in order as they are ready.
        let mut crc = crc32fast::Hasher::new();
        let mut total: u64 = 0;
        let mut offset = header(level).len() as u64;
        let mut compressed = Compressed::default();
        let mut failure = None;
        for reply in order_rx.iter() {
            let block = match reply.recv() {
                Ok(Ok(block)) => block,
                Ok(Err(e)) => {
                    failure = Some(LayerError::stream("compressing the layer", e));
                    break;
                }
                // The worker died (it panicked): the stream has a hole, whatever the producer says.
                Err(_) => {
                    failure = Some(LayerError::stream(
                        "compressing the layer",
                        io::Error::other("a compression thread panicked"),
                    ));
                    break;
                }
            };
            if let Err(e) = out.write_all(&block.bytes) {
                failure = Some(write_err(e));
                break;
            }
            crc.combine(&block.crc);
            total += block.len as u64;
            if block.copied {
                compressed.reused += block.len as u64;
            }
            compressed.index.blocks.push(BlockRecord {
                key: block.key,
                offset,
                size: block.bytes.len() as u32,
                uncompressed: block.len as u32,
                crc: block.crc.finalize(),
            });
            offset += block.bytes.len() as u64;
            buffers.give(block.bytes);
        }
        // Dropping the receiver (if we stopped early) makes the producer's next send fail, so
        // it stops, which closes the job queue, which stops the workers.
        drop(order_rx);
        let produced = match producer.join() {
            Ok(result) => result,
            Err(_) => Err(LayerError::stream(
                "compressing the layer",
                io::Error::other("the layer writer thread panicked"),
            )),
        };
        if let Some(failure) = failure {
            return Err(failure);
        }
        let value = produced?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&(total as u32).to_le_bytes());
        out.write_all(&trailer).map_err(write_err)?;
        Ok((value, compressed))
    })
}

/// The producer's end: cuts what is written into blocks and queues them.
struct BlockWriter<'b> {
    buffer: Vec<u8>,
    buffers: &'b Buffers,
    /// The last [`WINDOW`] bytes before `buffer`.
    dictionary: Arc<Vec<u8>>,
    cutter: Cutter,
    jobs: SyncSender<Job>,
    order: SyncSender<Receiver<io::Result<Deflated>>>,
}

impl BlockWriter<'_> {
    fn send(&mut self, last: bool) -> io::Result<()> {
        let next = if last {
            Vec::new()
        } else {
            self.buffers.take(MAX_BLOCK)
        };
        let data = std::mem::replace(&mut self.buffer, next);
        let tail = data.len().min(WINDOW);
        // Blocks are at least MIN_BLOCK > WINDOW bytes (but the last), so the dictionary
        // comes from one block.
        let next = Arc::new(data[data.len() - tail..].to_vec());
        let dictionary = std::mem::replace(&mut self.dictionary, next);
        let (reply, result) = sync_channel(1);
        let stopped = || {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the compressed layer is no longer being written",
            )
        };
        self.order.send(result).map_err(|_| stopped())?;
        self.jobs
            .send(Job {
                data,
                dictionary,
                last,
                reply,
            })
            .map_err(|_| stopped())
    }
}

impl Write for BlockWriter<'_> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        while !data.is_empty() {
            match self.cutter.cut(self.buffer.len(), data) {
                Some(n) => {
                    self.buffer.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.send(false)?;
                }
                None => {
                    self.buffer.extend_from_slice(data);
                    data = &[];
                }
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn worker(level: u32, previous: Option<&PreviousBlocks>, jobs: &Mutex<Receiver<Job>>, buffers: &Buffers) {
    loop {
        let job = match jobs.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let key = block_key(level, &job.dictionary, &job.data, job.last);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&job.data);
        let copied = previous.and_then(|p| p.copy(&key, &job.data, &crc, buffers));
        let result = match copied {
            Some(bytes) => Ok((bytes, true)),
            None => deflate_block(level, &job.data, &job.dictionary, job.last, buffers).map(|b| (b, false)),
        };
        let result = result.map(|(bytes, copied)| Deflated {
            bytes,
            key,
            crc,
            len: job.data.len(),
            copied,
        });
        buffers.give(job.data);
        // The writer may have given up; then nobody wants the block.
        let _ = job.reply.send(result);
    }
}

/// The name of a block: SHA-256 over the format version, the level, whether it is the last
/// block, the dictionary and the input, each length-prefixed.
fn block_key(level: u32, dictionary: &[u8], data: &[u8], last: bool) -> BlockKey {
    let mut hasher = Sha256::new();
    hasher.update(b"rbuild gzip block");
    hasher.update(crate::FORMAT_VERSION.to_le_bytes());
    hasher.update(level.to_le_bytes());
    hasher.update([u8::from(last)]);
    hasher.update((dictionary.len() as u64).to_le_bytes());
    hasher.update(dictionary);
    hasher.update((data.len() as u64).to_le_bytes());
    hasher.update(data);
    hasher.finalize().into()
}

/// Bytes sampled by [`incompressible`], and how many samples.
const SAMPLE: usize = 16 * 1024;
const SAMPLES: usize = 4;

/// Whether deflate would gain nothing on `data`: samples across it, compressed at the fastest
/// level, do not shrink by 1%. Compressed, photographs, video and archives search a block for
/// matches at level 6 for several times longer than hashing it takes, only to store it; the
/// answer depends on the bytes alone, so the output still does too. Deflate cannot look back
/// more than 32 KiB, so samples of 16 KiB judge it fairly.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < SAMPLE * SAMPLES {
        return false;
    }
    let step = data.len() / SAMPLES;
    (0..SAMPLES).all(|i| {
        let sample = &data[i * step..i * step + SAMPLE];
        let mut trial = Compress::new(flate2::Compression::fast(), false);
        let mut out = vec![0u8; SAMPLE + 1024];
        match trial.compress(sample, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => trial.total_out() as usize * 100 >= sample.len() * 99,
            _ => false,
        }
    })
}

/// `data` as stored deflate blocks of at most 65,535 bytes: what deflate emits for
/// incompressible input anyway. Each block starts byte-aligned (so does every block of ours)
/// and ends so, as a sync flush would; the last is final when `last`.
fn stored(data: &[u8], last: bool, buffers: &Buffers) -> Vec<u8> {
    const MAX: usize = 65_535;
    let mut out = buffers.take(data.len() + data.len() / MAX * 5 + 5);
    let mut chunks = data.chunks(MAX).peekable();
    while let Some(chunk) = chunks.next() {
        let len = chunk.len() as u16;
        // BFINAL in bit 0, BTYPE 00 (stored), the rest of the byte padding.
        out.push(u8::from(last && chunks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Raw-deflates `data` with `dictionary` as history, ending in a sync flush, or in the final
/// block when `last`.
///
/// A fresh compressor for every block: a reused one, even after `reset`, can give different
/// bytes once its window has slid (seen with zlib-rs 0.6), which would make the output
/// depend on which worker got which block. Setting one up costs far less than deflating a
/// block.
fn deflate_block(
    level: u32,
    data: &[u8],
    dictionary: &[u8],
    last: bool,
    buffers: &Buffers,
) -> io::Result<Vec<u8>> {
    if level > 0 && incompressible(data) {
        return Ok(stored(data, last, buffers));
    }
    let mut compress = Compress::new(flate2::Compression::new(level), false);
    let deflate = &mut compress;
    if !dictionary.is_empty() {
        deflate.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Deflate's output can depend on how much room it is given (stored blocks are cut to
    // fit), so the room grows by a fixed rule — the one a `Vec` growing from
    // `len / 2 + 1024` follows — whatever the capacity of the recycled buffer.
    let mut room = data.len() / 2 + 1024;
    let mut bytes = buffers.take(room);
    let mut consumed = 0;
    loop {
        if bytes.len() == room {
            room += room.max(64 * 1024);
        }
        let before_in = deflate.total_in();
        let before_out = bytes.len();
        let total_out = deflate.total_out();
        bytes.resize(room, 0);
        let status = deflate
            .compress(&data[consumed..], &mut bytes[before_out..], flush)
            .map_err(io::Error::other)?;
        bytes.truncate(before_out + (deflate.total_out() - total_out) as usize);
        consumed += (deflate.total_in() - before_in) as usize;
        let room_left = bytes.len() < room;
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete once all input is in and deflate stopped short of
            // filling the buffer.
            Status::Ok | Status::BufError if !last => consumed == data.len() && room_left,
            Status::Ok => false,
            Status::BufError => {
                if bytes.len() == before_out && room_left {
                    return Err(io::Error::other("deflate made no progress"));
                }
                false
            }
        };
        if done {
            break;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Data that compresses somewhat, with repeats across block boundaries (enough for the
    /// window to slide within a block).
    fn sample(len: usize) -> Vec<u8> {
        let mut state = 1u64;
        (0..len)
            .map(|i| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                if (state >> 60) < 4 {
                    (state >> 33) as u8
                } else {
                    b"abcdefghij"[i % 10]
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], level: u32, threads: usize) -> Vec<u8> {
        gzip_reusing(data, level, threads, None).0
    }

    fn gzip_reusing(
        data: &[u8],
        level: u32,
        threads: usize,
        previous: Option<&PreviousBlocks>,
    ) -> (Vec<u8>, Compressed) {
        let mut out = Vec::new();
        let ((), compressed) = compress(level, threads, previous, &mut out, |w| {
            // Odd-sized writes, so block cutting is exercised.
            for chunk in data.chunks(7919) {
                w.write_all(chunk).map_err(|e| LayerError::stream("test", e))?;
            }
            Ok(())
        })
        .unwrap();
        (out, compressed)
    }

    /// Incompressible bytes, as the bench's sources are.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn previous_blocks(blob: &[u8], index: &BlockIndex) -> PreviousBlocks {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(blob).unwrap();
        PreviousBlocks::new(index, file)
    }

    #[test]
    fn blocks_are_cut_by_content_within_bounds() {
        let data = noise(12 * MAX_BLOCK, 3);
        let (_, compressed) = gzip_reusing(&data, 6, 2, None);
        let blocks = &compressed.index.blocks;
        let (last, rest) = blocks.split_last().unwrap();
        assert!(rest.len() > 20, "{} blocks", blocks.len());
        for block in rest {
            let len = block.uncompressed as usize;
            assert!((MIN_BLOCK..=MAX_BLOCK).contains(&len), "{len}");
        }
        assert!(last.uncompressed as usize <= MAX_BLOCK);
        // Offsets follow each other from the header on.
        assert_eq!(blocks[0].offset, 10);
        for pair in blocks.windows(2) {
            assert_eq!(pair[1].offset, pair[0].offset + u64::from(pair[0].size));
        }
    }

    #[test]
    fn an_insertion_moves_only_nearby_blocks_and_reuse_gives_the_same_bytes() {
        let before = noise(12 * MAX_BLOCK, 9);
        let (blob, compressed) = gzip_reusing(&before, 6, 2, None);
        let previous = previous_blocks(&blob, &compressed.index);

        let mut after = before.clone();
        let at = after.len() / 3;
        after.splice(at..at, b"// one more line\n".iter().copied());
        let (reused_blob, reused) = gzip_reusing(&after, 6, 2, Some(&previous));
        assert!(
            reused_blob == gzip(&after, 6, 1),
            "copying blocks changed the bytes"
        );
        let changed = reused
            .index
            .blocks
            .iter()
            .filter(|b| !previous.blocks.contains_key(&b.key))
            .count();
        assert!(changed <= 2, "{changed} blocks deflated again");
        assert!(
            reused.reused as usize >= after.len() - 2 * MAX_BLOCK,
            "{} of {} bytes reused",
            reused.reused,
            after.len()
        );
    }

    #[test]
    fn a_stale_index_costs_a_deflate_not_a_wrong_layer() {
        let data = noise(3 * MAX_BLOCK, 5);
        let (blob, compressed) = gzip_reusing(&data, 6, 2, None);
        let mut stale = compressed.index.clone();
        for block in &mut stale.blocks {
            block.crc ^= 1;
        }
        let (again, reused) = gzip_reusing(&data, 6, 2, Some(&previous_blocks(&blob, &stale)));
        assert!(again == blob);
        assert_eq!(reused.reused, 0);
    }

    #[test]
    fn block_index_bytes_round_trip() {
        let (_, compressed) = gzip_reusing(&noise(4 * MAX_BLOCK, 1), 6, 2, None);
        let bytes = compressed.index.to_bytes();
        assert_eq!(BlockIndex::from_bytes(&bytes), Some(compressed.index));
        assert_eq!(BlockIndex::from_bytes(&bytes[1..]), None);
    }

    #[test]
    fn one_member_that_single_member_decoders_read() {
        for len in [
            0,
            1,
            MAX_BLOCK - 1,
            MAX_BLOCK,
            MAX_BLOCK + 1,
            3 * MAX_BLOCK + 12345,
        ] {
            let data = sample(len);
            let gz = gzip(&data, 6, 3);
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, data, "length {len}");
            // Exactly one member: nothing after the first member's trailer.
            let mut single = flate2::bufread::GzDecoder::new(gz.as_slice());
            let mut sink = Vec::new();
            single.read_to_end(&mut sink).unwrap();
            assert!(
                single.into_inner().is_empty(),
                "length {len}: trailing bytes after the member"
            );
        }
    }

    #[test]
    fn incompressible_blocks_are_stored_and_the_rest_still_compressed() {
        let random = noise(3 * MAX_BLOCK, 5);
        let text = sample(2 * MAX_BLOCK);
        let data = [random.as_slice(), text.as_slice()].concat();
        let gz = gzip(&data, 6, 2);
        let mut decoded = Vec::new();
        let mut single = flate2::bufread::GzDecoder::new(gz.as_slice());
        single.read_to_end(&mut decoded).unwrap();
        assert!(decoded == data, "stored blocks decode to the input");
        assert!(single.into_inner().is_empty(), "one member");
        let (_, compressed) = gzip_reusing(&data, 6, 2, None);
        let mut end = 0;
        let random_blocks = compressed.index.blocks.iter().take_while(|b| {
            end += b.uncompressed as usize;
            end <= random.len()
        });
        for block in random_blocks.filter(|b| b.uncompressed as usize >= SAMPLE * SAMPLES) {
            // Stored: 5 bytes of framing per 65,535, nothing saved or spent.
            let framing = (block.uncompressed as usize).div_ceil(65_535) * 5;
            assert_eq!(block.size as usize, block.uncompressed as usize + framing);
        }
        assert!(
            gz.len() < random.len() + text.len() * 9 / 10,
            "the text part is deflated"
        );
    }

    #[test]
    fn output_does_not_depend_on_threads() {
        let data = sample(5 * MAX_BLOCK + 999);
        for level in [0, 1, 6, 9] {
            let one = gzip(&data, level, 1);
            for threads in [2, 4, 7] {
                assert!(
                    one == gzip(&data, level, threads),
                    "level {level}, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn header_is_fixed() {
        let gz = gzip(b"hello", 6, 1);
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(&gzip(b"hello", 9, 1)[8..10], &[2, 255]);
    }

    #[test]
    fn a_producer_error_is_returned_and_no_trailer_written() {
        let mut out = Vec::new();
        let err = compress(6, 2, None, &mut out, |w| -> Result<(), LayerError> {
            w.write_all(&sample(3 * MAX_BLOCK)).unwrap();
            Err(LayerError::InvalidOption("stop".into()))
        })
        .unwrap_err();
        assert!(matches!(err, LayerError::InvalidOption(_)));
    }

    #[test]
    fn an_output_error_stops_everything() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = sample(20 * MAX_BLOCK);
        let err = compress(6, 2, None, &mut Broken, |w| {
            w.write_all(&data).map_err(|e| LayerError::stream("producing", e))
        })
        .unwrap_err();
        let err = rbuild_oci::report::chain(&err);
        assert!(err.contains("disk full"), "{err}");
    }
}
