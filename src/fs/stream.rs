//! Cutting a new file while it is written front to back: the bytes appended
//! at its end go to a worker thread that cuts, hashes and stores them, so
//! the second core works while the first copies, and a close or `fsync` of
//! a large new file has only its last chunk left to cut. Chunk boundaries
//! are the ones a cut of the whole file gives (fastcdc restarts at each
//! boundary; the worker never emits the last, unfinished chunk it holds).

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::store::chunker;
use crate::store::manifest::Manifest;
use crate::store::Store;

/// Bytes queued before the writer waits for the worker.
const MAX_QUEUE: usize = 32 << 20;
/// Bytes the worker takes at once.
const STEP: usize = 4 << 20;

/// A worker cutting one file's appended bytes.
pub struct Streamer {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Appended bytes the worker has not taken yet.
    queue: Vec<u8>,
    /// No more bytes will come: cut what is queued, then stop.
    closing: bool,
    /// The writer gave up on the stream: stop at once.
    cancel: bool,
    /// The worker stopped (finished, cancelled or failed).
    stopped: bool,
    /// The cut prefix, published when the worker finishes.
    made: Manifest,
    /// What stopped the worker early.
    failed: Option<io::Error>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Streamer {
    /// Starts a worker storing chunks in `store`.
    pub fn start(store: Arc<Store>) -> io::Result<Streamer> {
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let worker = std::thread::Builder::new()
            .name("chanfs-cut".into())
            .spawn(move || {
                let r = work(&sh, &store);
                let mut st = lock(&sh.state);
                match r {
                    Ok(m) => st.made = m,
                    Err(e) => st.failed = Some(e),
                }
                st.stopped = true;
                sh.wake.notify_all();
            })?;
        Ok(Streamer {
            shared,
            worker: Some(worker),
        })
    }

    /// Appends bytes at the end of the stream; waits while the worker is
    /// far behind. Returns false when the worker stopped (the caller then
    /// drops the stream and cuts the whole file at commit).
    pub fn push(&self, data: &[u8]) -> bool {
        let mut st = lock(&self.shared.state);
        while st.queue.len() >= MAX_QUEUE && !st.stopped {
            st = self.shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.stopped {
            return false;
        }
        st.queue.extend_from_slice(data);
        if st.queue.len() >= STEP {
            self.shared.wake.notify_all();
        }
        true
    }

    /// Waits until the worker cut everything queued (but the unfinished
    /// last chunk) and returns the manifest of the cut prefix.
    pub fn finish(mut self) -> io::Result<Manifest> {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        let mut st = lock(&self.shared.state);
        if let Some(e) = st.failed.take() {
            return Err(e);
        }
        Ok(std::mem::take(&mut st.made))
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        if self.worker.is_some() {
            lock(&self.shared.state).cancel = true;
            self.shared.wake.notify_all();
        }
    }
}

/// The worker: takes queued bytes by steps, cuts them after the carried
/// unfinished chunk, stores every finished chunk.
fn work(sh: &Shared, store: &Store) -> io::Result<Manifest> {
    let mut made = Manifest::default();
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let (bytes, last) = {
            let mut st = lock(&sh.state);
            while !st.cancel && !st.closing && st.queue.len() < STEP {
                st = sh.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.cancel {
                return Err(io::Error::other("stream cancelled"));
            }
            let q = std::mem::take(&mut st.queue);
            sh.wake.notify_all();
            (q, st.closing)
        };
        if carry.is_empty() {
            carry = bytes;
        } else {
            carry.extend_from_slice(&bytes);
        }
        let cuts = chunker::cut(&carry);
        let mut consumed = 0;
        for &(off, len) in &cuts[..cuts.len().saturating_sub(1)] {
            let put = |h: &_, d: &[u8]| store.put_chunk(h, d).map_err(super::to_io);
            made.push(chunker::extent_of(&carry[off..off + len], put)?);
            consumed = off + len;
        }
        carry.drain(..consumed);
        if last {
            return Ok(made);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::store::chunker::ChunkIo;
    use crate::store::ranges::RangeSet;
    use crate::store::Hash;

    struct Io<'a>(&'a Store, &'a [u8]);

    impl ChunkIo for Io<'_> {
        fn read_chunk(&self, hash: &Hash, within: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read_chunk(hash, within, buf)
        }
        fn read_dirty(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
            buf.copy_from_slice(&self.1[off as usize..off as usize + buf.len()]);
            Ok(())
        }
        fn put_chunk(&self, hash: &Hash, data: &[u8]) -> io::Result<()> {
            self.0.put_chunk(hash, data).map_err(super::super::to_io)
        }
    }

    /// Bytes pushed in uneven pieces, then the rest cut at commit, give
    /// the very chunks of a cut of the whole file, all readable.
    #[test]
    fn streamed_cut_equals_whole_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(dir.path(), SigningKey::from_bytes(&[7; 32]), [7; 32]).unwrap());
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut data: Vec<u8> = (0..(21 << 20) + 12_345)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        // A run of zeros becomes a hole either way.
        data[5 << 20..(5 << 20) + (600 << 10)].fill(0);
        let s = Streamer::start(store.clone()).unwrap();
        let mut p = 0;
        let mut step = 1000;
        while p < data.len() {
            let n = step.min(data.len() - p);
            assert!(s.push(&data[p..p + n]));
            p += n;
            step = step * 3 % 3_000_017 + 4096;
        }
        let pre = s.finish().unwrap();
        assert!(pre.len() > 20 << 20, "cut only {} bytes", pre.len());
        let io = Io(&store, &data);
        let size = data.len() as u64;
        let mut rest = RangeSet::new();
        rest.insert(pre.len(), size);
        let streamed = chunker::materialize(&pre, &rest, size, &io).unwrap();
        let mut all = RangeSet::new();
        all.insert(0, size);
        let whole = chunker::materialize(&Manifest::default(), &all, size, &io).unwrap();
        assert_eq!(streamed, whole);
        let mut back = vec![0u8; data.len()];
        chunker::read_base(&streamed, 0, &mut back, &io).unwrap();
        assert!(back == data);
        store.close().unwrap();
    }
}
