//! gzip on every core, pigz-style, with output that does not depend on the number of cores.
//!
//! The uncompressed stream is cut into blocks of exactly [`BLOCK_SIZE`] bytes (the last one
//! shorter). Each block is raw-deflated on its own, primed with the last 32 KiB of the block
//! before it as the dictionary, and ends with a sync flush (the last one with the final
//! deflate block), so the pieces join into one deflate stream. Around it go a fixed gzip
//! header (mtime 0, OS "unknown", as Go writes it) and a trailer with the CRC-32 combined from
//! the blocks' CRCs and the length. The result is one ordinary gzip member: Go's
//! `compress/gzip` (docker, containerd), `gzip -t` and single-member decoders all read it.
//!
//! Three kinds of thread work on a layer: the producer (the tar writer and the diff ID hash),
//! `threads` deflate workers, and the calling thread, which writes blocks out in order. Memory
//! stays bounded: the producer waits once `threads + 2` blocks are queued or being deflated,
//! so at most about `(threads + 3) × 2 × BLOCK_SIZE` bytes are held (input and output).

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use flate2::{Compress, FlushCompress, Status};

use crate::error::LayerError;

/// Uncompressed bytes per block. Part of the output format: changing it changes the digest
/// of every gzip layer (see [`FORMAT_VERSION`](crate::FORMAT_VERSION)).
pub const BLOCK_SIZE: usize = 256 * 1024;

/// Deflate's window: the most history a block can refer back to.
const WINDOW: usize = 32 * 1024;

/// One block to deflate.
struct Job {
    data: Arc<Vec<u8>>,
    /// The previous block, whose tail is the dictionary.
    previous: Option<Arc<Vec<u8>>>,
    last: bool,
    reply: SyncSender<io::Result<Deflated>>,
}

/// A deflated block and the CRC-32 of its input.
struct Deflated {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
    len: usize,
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
/// worker threads (at least one), and returns what `produce` returned.
pub(crate) fn compress<T: Send>(
    level: u32,
    threads: usize,
    out: &mut dyn Write,
    produce: impl FnOnce(&mut dyn Write) -> Result<T, LayerError> + Send,
) -> Result<T, LayerError> {
    let threads = threads.max(1);
    let write_err = |e| LayerError::stream("writing the compressed layer", e);
    out.write_all(&header(level)).map_err(write_err)?;

    std::thread::scope(|scope| {
        let (job_tx, job_rx) = sync_channel::<Job>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        // Replies in stream order; its bound is what bounds memory.
        let (order_tx, order_rx) = sync_channel::<Receiver<io::Result<Deflated>>>(threads + 1);

        for _ in 0..threads {
            let jobs = Arc::clone(&job_rx);
            scope.spawn(move || worker(level, &jobs));
        }
        let producer = scope.spawn(move || {
            let mut blocks = BlockWriter {
                buffer: Vec::with_capacity(BLOCK_SIZE),
                previous: None,
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
        Ok(value)
    })
}

/// The producer's end: cuts what is written into blocks and queues them.
struct BlockWriter {
    buffer: Vec<u8>,
    previous: Option<Arc<Vec<u8>>>,
    jobs: SyncSender<Job>,
    order: SyncSender<Receiver<io::Result<Deflated>>>,
}

impl BlockWriter {
    fn send(&mut self, last: bool) -> io::Result<()> {
        let capacity = if last { 0 } else { BLOCK_SIZE };
        let data = Arc::new(std::mem::replace(&mut self.buffer, Vec::with_capacity(capacity)));
        let previous = self.previous.replace(Arc::clone(&data));
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
                previous,
                last,
                reply,
            })
            .map_err(|_| stopped())
    }
}

impl Write for BlockWriter {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        while !data.is_empty() {
            if self.buffer.len() == BLOCK_SIZE {
                self.send(false)?;
            }
            let n = (BLOCK_SIZE - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn worker(level: u32, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let previous = job
            .previous
            .as_deref()
            .map(|p| &p[p.len().saturating_sub(WINDOW)..]);
        let result = deflate_block(level, &job.data, previous, job.last);
        // The writer may have given up; then nobody wants the block.
        let _ = job.reply.send(result);
    }
}

/// Raw-deflates `data` with `dictionary` as history, ending in a sync flush, or in the final
/// block when `last`.
///
/// A fresh compressor for every block: a reused one, even after `reset`, can give different
/// bytes once its window has slid (seen with zlib-rs 0.6), which would make the output
/// depend on which worker got which block. Setting one up costs far less than deflating
/// [`BLOCK_SIZE`] bytes.
fn deflate_block(level: u32, data: &[u8], dictionary: Option<&[u8]>, last: bool) -> io::Result<Deflated> {
    let mut compress = Compress::new(flate2::Compression::new(level), false);
    let deflate = &mut compress;
    if let Some(dictionary) = dictionary.filter(|d| !d.is_empty()) {
        deflate.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut bytes = Vec::with_capacity(data.len() / 2 + 1024);
    let mut consumed = 0;
    loop {
        if bytes.len() == bytes.capacity() {
            bytes.reserve(bytes.capacity().max(64 * 1024));
        }
        let before_in = deflate.total_in();
        let before_out = bytes.len();
        let status = deflate
            .compress_vec(&data[consumed..], &mut bytes, flush)
            .map_err(io::Error::other)?;
        consumed += (deflate.total_in() - before_in) as usize;
        let room_left = bytes.len() < bytes.capacity();
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
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    Ok(Deflated {
        bytes,
        crc,
        len: data.len(),
    })
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
        let mut out = Vec::new();
        compress(level, threads, &mut out, |w| {
            // Odd-sized writes, so block cutting is exercised.
            for chunk in data.chunks(7919) {
                w.write_all(chunk).map_err(|e| LayerError::stream("test", e))?;
            }
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn one_member_that_single_member_decoders_read() {
        for len in [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            3 * BLOCK_SIZE + 12345,
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
    fn output_does_not_depend_on_threads() {
        let data = sample(5 * BLOCK_SIZE + 999);
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
        let err = compress(6, 2, &mut out, |w| -> Result<(), LayerError> {
            w.write_all(&sample(3 * BLOCK_SIZE)).unwrap();
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
        let data = sample(20 * BLOCK_SIZE);
        let err = compress(6, 2, &mut Broken, |w| {
            w.write_all(&data).map_err(|e| LayerError::stream("producing", e))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
