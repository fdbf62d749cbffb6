//! gzip on all cores, pigz-style: the stream is cut into fixed-size blocks, each deflated on
//! its own thread with the previous block's last 32 KiB as its dictionary, and the pieces are
//! joined with sync flushes into one ordinary gzip member that every reader accepts.
//!
//! The output depends only on the data, the level and [`BLOCK`] — never on the number of
//! threads — so layers are byte-identical on any machine.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Uncompressed bytes per block. Fixed: changing it changes every gzip layer's digest.
pub const BLOCK: usize = 128 * 1024;
/// Deflate's window, and so the useful dictionary size.
const WINDOW: usize = 32 * 1024;

struct Job {
    data: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// Deflates one block as raw deflate, ending with a sync flush (or the final block).
fn deflate_block(level: u32, data: &[u8], dictionary: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::new(level), false);
    if !dictionary.is_empty() {
        compress.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = usize::try_from(compress.total_in()).map_err(io::Error::other)?;
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = usize::try_from(compress.total_in()).map_err(io::Error::other)? == data.len();
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(out),
            _ if !last && all_in && room_left => return Ok(out),
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
}

/// A gzip writer compressing on `threads` worker threads.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    block: Vec<u8>,
    dictionary: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    started: bool,
    in_flight: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_in_flight: usize,
    jobs: Option<SyncSender<Job>>,
}

impl<W: Write> ParallelGzip<W> {
    /// A writer at compression `level` (0–9) using `threads` threads (at least one).
    pub fn new(out: W, level: u32, threads: usize) -> ParallelGzip<W> {
        let threads = threads.max(1);
        let (jobs, queue) = sync_channel::<Job>(threads * 2);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads {
            {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let result = deflate_block(level, &job.data, &job.dictionary, job.last);
                        let _ = job.reply.send(result);
                    }
                });
            }
        }
        ParallelGzip {
            out,
            level,
            block: Vec::with_capacity(BLOCK),
            dictionary: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            started: false,
            in_flight: VecDeque::new(),
            max_in_flight: threads * 2,
            jobs: Some(jobs),
        }
    }

    /// The compression level.
    pub fn level(&self) -> u32 {
        self.level
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.started {
            // No name, no mtime, unknown OS: nothing that varies between machines.
            self.out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            self.started = true;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        if let Some(reply) = self.in_flight.pop_front() {
            let compressed = reply
                .recv()
                .map_err(|_| io::Error::other("a compression thread stopped"))??;
            self.out.write_all(&compressed)?;
        }
        Ok(())
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        self.write_header()?;
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let dictionary = std::mem::take(&mut self.dictionary);
        self.dictionary = data[data.len().saturating_sub(WINDOW)..].to_vec();
        let (reply, receive) = sync_channel(1);
        let job = Job {
            data,
            dictionary,
            last,
            reply,
        };
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))?
            .send(job)
            .map_err(|_| io::Error::other("the compression threads stopped"))?;
        self.in_flight.push_back(receive);
        while self.in_flight.len() >= self.max_in_flight {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Compresses what is buffered, writes the trailer, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.in_flight.is_empty() {
            self.collect_one()?;
        }
        let crc = self.crc.clone().finalize();
        // ISIZE is the length modulo 2^32, by definition of the format.
        let size = (self.total & 0xffff_ffff) as u32;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&size.to_le_bytes())?;
        self.out.flush()?;
        // Closing the job channel lets the workers finish; they hold nothing we wait for.
        self.jobs = None;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.total += n as u64;
        if self.block.len() == BLOCK {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn compress(data: &[u8], threads: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), 6, threads);
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 31) ^ (i >> 7)) as u8 % 97).collect()
    }

    #[test]
    fn is_one_valid_gzip_member() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 123] {
            let data = sample(len);
            let compressed = compress(&data, 3);
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&compressed[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, data, "length {len}");
        }
    }

    #[test]
    fn output_does_not_depend_on_threads() {
        let data = sample(7 * BLOCK + 999);
        assert_eq!(compress(&data, 1), compress(&data, 4));
    }

    #[test]
    fn gzip_tool_accepts_it() {
        let data = sample(3 * BLOCK + 5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, compress(&data, 2)).unwrap();
        let status = std::process::Command::new("gzip").arg("-t").arg(&path).status();
        match status {
            Ok(status) => assert!(status.success(), "gzip -t rejected the stream"),
            Err(e) => eprintln!("SKIPPED: gzip not available: {e}"),
        }
    }
}
