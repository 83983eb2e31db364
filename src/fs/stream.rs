//! Cutting a new file while it is written front to back: the bytes appended
//! at its end go to a pipeline of three threads (one cuts, one hashes the
//! chunks cut before, one writes those hashed before to the pack, waiting
//! for the disk while the others work), so the second core works while
//! the first copies, and a close or `fsync` of
//! a large new file has only its last chunk left to cut. Chunk boundaries
//! are the ones a cut of the whole file gives (fastcdc restarts at each
//! boundary; the worker never emits the last, unfinished chunk it holds).
//!
//! Appended bytes live only here until they are stored as chunks: the
//! stream does not keep a second copy in the file's staging. When it
//! finishes it hands back what it cut and the bytes it did not store (the
//! unfinished chunk, and everything queued if a chunk could not be
//! stored), so nothing written is lost.

use std::collections::BTreeMap;
use std::io;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::store::chunker::{self, MAX_CHUNK};
use crate::store::manifest::{Extent, Manifest};
use crate::store::ranges::RangeSet;
use crate::store::{Hash, Store};

/// Bytes queued before the writer waits for the worker.
const MAX_QUEUE: usize = 16 << 20;
/// Bytes the worker takes at once.
const STEP: usize = 4 << 20;
/// Room kept in front of queued bytes, where the worker puts the
/// unfinished chunk it carries (at most one chunk), so that it cuts one
/// contiguous buffer without copying the queued bytes.
const HEADROOM: usize = MAX_CHUNK as usize;

/// How far past the end of the stream a write may start and still be
/// held for it (the kernel sends a file's writes from several threads, so
/// they come slightly out of order).
const EARLY_WINDOW: u64 = 16 << 20;
/// Bytes held that way at most.
const EARLY_MAX: usize = 16 << 20;

/// A worker cutting one file's appended bytes.
pub struct Streamer {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    /// End of the bytes pushed.
    end: u64,
    /// Writes a little past `end`, by offset, pushed once the gap before
    /// them is filled.
    early: BTreeMap<u64, Vec<u8>>,
    /// Bytes in `early`.
    early_bytes: usize,
    /// Writes before `end`, which it did not see (their bytes are staged
    /// and cut again at commit).
    late: RangeSet,
}

/// What a stream did with an offered write.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// It holds the bytes now.
    Taken,
    /// Not for the stream (before its end, which it notes as late, or too
    /// far past it): the caller keeps them.
    Declined,
    /// Over bytes it holds ahead of its end: the caller must finish the
    /// stream first (or those older bytes would win).
    OverHeld,
    /// The worker stopped (a chunk could not be stored): the caller
    /// finishes the stream and keeps these bytes.
    Stopped,
}

/// What a finished stream made of the bytes pushed to it.
pub struct Finished {
    /// The stored chunks of the cut prefix.
    pub made: Manifest,
    /// The bytes after that prefix, up to the end of the stream, not stored.
    pub tail: Vec<u8>,
    /// Writes past the end it held, by offset.
    pub early: BTreeMap<u64, Vec<u8>>,
    /// Writes before its end that it did not see.
    pub late: RangeSet,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// `HEADROOM` bytes, then the appended bytes the worker has not taken.
    queue: Vec<u8>,
    /// An emptied buffer for the next queue (keeps its capacity).
    spare: Vec<u8>,
    /// No more bytes will come: cut what is queued, then stop.
    closing: bool,
    /// The writer gave up on the stream: stop at once.
    cancel: bool,
    /// The worker stopped (finished, cancelled or failed).
    stopped: bool,
    /// The cut prefix so far (stored chunks, in order).
    made: Manifest,
    /// Bytes the worker took but did not store, published when it stops.
    held: Vec<u8>,
}

impl Default for State {
    fn default() -> State {
        State {
            queue: vec![0; HEADROOM],
            spare: Vec::new(),
            closing: false,
            cancel: false,
            stopped: false,
            made: Manifest::default(),
            held: Vec::new(),
        }
    }
}

impl State {
    fn queued(&self) -> usize {
        self.queue.len() - HEADROOM
    }
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
                let mut held = Vec::new();
                if let Err(e) = work(&sh, &store, &mut held) {
                    tracing::debug!("stream stopped: {e}");
                }
                let mut st = lock(&sh.state);
                st.held = held;
                st.stopped = true;
                sh.wake.notify_all();
            })?;
        Ok(Streamer {
            shared,
            worker: Some(worker),
            end: 0,
            early: BTreeMap::new(),
            early_bytes: 0,
            late: RangeSet::new(),
        })
    }

    /// The chunks the stream stored so far (the garbage collector keeps
    /// them).
    pub fn chunk_refs(&self) -> Vec<Hash> {
        lock(&self.shared.state)
            .made
            .chunk_hashes()
            .copied()
            .collect()
    }

    /// End of the bytes the stream holds (pushed, not counting early ones).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Offset of the first early write it holds.
    pub fn next_early(&self) -> Option<u64> {
        self.early.keys().next().copied()
    }

    /// True when some early write it holds overlaps `[off, end)`.
    pub fn holds(&self, off: u64, end: u64) -> bool {
        self.early
            .range(..end)
            .next_back()
            .is_some_and(|(&o, b)| o + b.len() as u64 > off)
    }

    /// Offers a write at `off`: taken when it continues the stream (then
    /// the early writes it reaches follow) or starts a little past its end.
    pub fn offer(&mut self, off: u64, data: &[u8]) -> Offered {
        let end = off + data.len() as u64;
        if off == self.end {
            return if self.push(data) {
                Offered::Taken
            } else {
                Offered::Stopped
            };
        }
        if self.holds(off, end) {
            return Offered::OverHeld;
        }
        if off < self.end {
            self.late.insert(off, end.min(self.end));
            return Offered::Declined;
        }
        if off - self.end > EARLY_WINDOW || self.early_bytes + data.len() > EARLY_MAX {
            return Offered::Declined;
        }
        self.early.insert(off, data.to_vec());
        self.early_bytes += data.len();
        Offered::Taken
    }

    /// Appends bytes at the end of the stream, then the early writes that
    /// now follow it. False when the worker stopped: the bytes not taken
    /// are then the caller's (these) or still held (early ones).
    pub fn push(&mut self, data: &[u8]) -> bool {
        if !self.enqueue(data) {
            return false;
        }
        self.end += data.len() as u64;
        while let Some(bytes) = self.early.remove(&self.end) {
            if !self.enqueue(&bytes) {
                self.early.insert(self.end, bytes);
                return false;
            }
            self.early_bytes -= bytes.len();
            self.end += bytes.len() as u64;
        }
        true
    }

    /// Queues bytes for the worker; waits while it is far behind.
    fn enqueue(&self, data: &[u8]) -> bool {
        let mut st = lock(&self.shared.state);
        while st.queued() >= MAX_QUEUE && !st.stopped {
            st = self.shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.stopped {
            return false;
        }
        st.queue.extend_from_slice(data);
        if st.queued() >= STEP {
            self.shared.wake.notify_all();
        }
        true
    }

    /// Waits until the worker cut everything queued (but the unfinished
    /// last chunk); returns the cut prefix and every byte after it. Fails
    /// only if the worker died, losing what it held.
    pub fn finish(mut self) -> io::Result<Finished> {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            if w.join().is_err() {
                return Err(io::Error::other("the cutting thread panicked"));
            }
        }
        let mut st = lock(&self.shared.state);
        let mut tail = std::mem::take(&mut st.held);
        tail.extend_from_slice(&st.queue[HEADROOM..]);
        Ok(Finished {
            made: std::mem::take(&mut st.made),
            tail,
            early: std::mem::take(&mut self.early),
            late: std::mem::take(&mut self.late),
        })
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

/// A step cut and being stored: its buffer, where its bytes start, and
/// the chunks (offset, length from there) to store.
struct Step {
    buf: Vec<u8>,
    from: usize,
    chunks: Vec<(usize, usize)>,
}

impl Step {
    fn data(&self) -> &[u8] {
        &self.buf[self.from..]
    }
    /// End of its chunks (where its carried, unfinished chunk starts).
    fn consumed(&self) -> usize {
        self.chunks.last().map_or(0, |&(o, l)| o + l)
    }
}

/// What the storing threads made of a step: its extents, and the chunk it
/// failed at (index, error), if any.
type Stored = (Vec<Extent>, Option<(usize, io::Error)>);

/// A hashed step on its way to the pack: its extents, and the chunks to
/// store (index in the step, hash).
type Hashed = (Step, Vec<Extent>, Vec<(usize, Hash)>);

/// Steps in the storing threads at once (one hashed, one written).
const DEPTH: usize = 2;

/// Hashes the chunks of each step it is given, in order.
fn hash_steps(steps: mpsc::Receiver<Step>, out: mpsc::SyncSender<Hashed>) {
    for step in steps {
        let data = step.data();
        let mut made = Vec::with_capacity(step.chunks.len());
        let mut put = Vec::with_capacity(step.chunks.len());
        for (i, &(off, len)) in step.chunks.iter().enumerate() {
            let x = chunker::extent_of(&data[off..off + len], |h, _| {
                put.push((i, *h));
                Ok(())
            });
            made.extend(x.ok());
        }
        if out.send((step, made, put)).is_err() {
            return;
        }
    }
}

/// Stores the hashed chunks of each step it is given, in order, one batch
/// per step (the pack write waits for the disk while the next step is
/// hashed); on failure the whole step is held.
fn write_steps(
    store: &Store,
    steps: mpsc::Receiver<Hashed>,
    done: mpsc::SyncSender<(Step, Stored)>,
) {
    for (step, mut made, put) in steps {
        let data = step.data();
        let put: Vec<(Hash, &[u8])> = put
            .iter()
            .map(|&(i, h)| {
                let (off, len) = step.chunks[i];
                (h, &data[off..off + len])
            })
            .collect();
        let failed = match store.put_chunks(&put) {
            Ok(()) => None,
            Err(e) => {
                made.clear();
                Some((0, super::to_io(e)))
            }
        };
        drop(put);
        if done.send((step, (made, failed))).is_err() {
            return;
        }
    }
}

/// The worker: takes queued bytes by steps, cuts them after the carried
/// unfinished chunk, and has two more threads hash and store the finished
/// chunks of earlier steps while it cuts the next. Stored chunks go to the
/// shared state's `made` in order. Whatever it took but did not store is
/// left in `held` (the carry when it finishes; when a chunk could not be
/// stored, every byte from that chunk on).
fn work(sh: &Shared, store: &Arc<Store>, held: &mut Vec<u8>) -> io::Result<()> {
    let (to_hash, steps) = mpsc::sync_channel::<Step>(1);
    let (to_write, hashed) = mpsc::sync_channel::<Hashed>(1);
    let (done, stored) = mpsc::sync_channel::<(Step, Stored)>(DEPTH);
    let st2 = store.clone();
    let hasher = std::thread::Builder::new()
        .name("chanfs-hash".into())
        .spawn(move || hash_steps(steps, to_write))?;
    let writer = std::thread::Builder::new()
        .name("chanfs-store".into())
        .spawn(move || write_steps(&st2, hashed, done))?;
    let r = cut_steps(sh, &to_hash, &stored, held);
    drop(to_hash);
    let _ = hasher.join();
    let _ = writer.join();
    r
}

/// Takes back the oldest step being stored: its extents go to `made`, its
/// buffer back to the queue's spare (both in the shared state). On a
/// failed store, `held` gets the bytes from the failed chunk on, to the
/// end of the step's chunks.
fn take_back(
    sh: &Shared,
    stored: &mpsc::Receiver<(Step, Stored)>,
    held: &mut Vec<u8>,
) -> io::Result<()> {
    let (step, (extents, failed)) = stored
        .recv()
        .map_err(|_| io::Error::other("the storing thread stopped"))?;
    let r = match failed {
        Some((i, e)) => {
            let from = step.chunks.get(i).map_or(step.consumed(), |c| c.0);
            held.extend_from_slice(&step.data()[from..step.consumed()]);
            Err(e)
        }
        None => Ok(()),
    };
    let mut st = lock(&sh.state);
    for x in extents {
        st.made.push(x);
    }
    st.spare = step.buf;
    r
}

/// After a failed store: takes back the `n` later steps in flight, their
/// chunks' bytes going to `held` (each starts with the carry of the one
/// before, so `held` stays contiguous), whatever became of them.
fn give_up(stored: &mpsc::Receiver<(Step, Stored)>, n: usize, held: &mut Vec<u8>) {
    for _ in 0..n {
        let Ok((step, _)) = stored.recv() else {
            return;
        };
        held.extend_from_slice(&step.data()[..step.consumed()]);
    }
}

fn cut_steps(
    sh: &Shared,
    to_store: &mpsc::SyncSender<Step>,
    stored: &mpsc::Receiver<(Step, Stored)>,
    held: &mut Vec<u8>,
) -> io::Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    let mut in_flight = 0;
    loop {
        let (mut buf, last) = {
            let mut st = lock(&sh.state);
            while !st.cancel && !st.closing && st.queued() < STEP {
                st = sh.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.cancel {
                return Err(io::Error::other("stream cancelled"));
            }
            let mut next = std::mem::take(&mut st.spare);
            next.clear();
            next.resize(HEADROOM, 0);
            let q = std::mem::replace(&mut st.queue, next);
            sh.wake.notify_all();
            (q, st.closing)
        };
        // The carried unfinished chunk goes just before the new bytes.
        let from = if carry.len() <= HEADROOM {
            let from = HEADROOM - carry.len();
            buf[from..HEADROOM].copy_from_slice(&carry);
            from
        } else {
            buf.splice(..HEADROOM, carry.iter().copied());
            0
        };
        let mut chunks = chunker::cut(&buf[from..]);
        chunks.pop();
        let step = Step { buf, from, chunks };
        carry.clear();
        carry.extend_from_slice(&step.data()[step.consumed()..]);
        if in_flight == DEPTH {
            in_flight -= 1;
            if let Err(e) = take_back(sh, stored, held) {
                give_up(stored, in_flight, held);
                // This step starts with the previous one's carry.
                held.extend_from_slice(step.data());
                return Err(e);
            }
        }
        if to_store.send(step).is_err() {
            return Err(io::Error::other("the storing thread stopped"));
        }
        in_flight += 1;
        if last {
            while in_flight > 0 {
                in_flight -= 1;
                if let Err(e) = take_back(sh, stored, held) {
                    give_up(stored, in_flight, held);
                    held.extend_from_slice(&carry);
                    return Err(e);
                }
            }
            held.extend_from_slice(&carry);
            return Ok(());
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

    /// `n` pseudo-random bytes (xorshift from `seed`).
    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Bytes offered in uneven pieces, each pair in reverse order (the
    /// second piece is held until the first fills the gap), then the rest
    /// cut at commit, give the very chunks of a cut of the whole file, all
    /// readable.
    #[test]
    fn streamed_cut_equals_whole_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(dir.path(), SigningKey::from_bytes(&[7; 32]), [7; 32]).unwrap());
        let mut data = noise((21 << 20) + 12_345, 0x2545_F491_4F6C_DD1D);
        // A run of zeros becomes a hole either way.
        data[5 << 20..(5 << 20) + (600 << 10)].fill(0);
        let mut s = Streamer::start(store.clone()).unwrap();
        let mut pieces = Vec::new();
        let (mut p, mut step) = (0, 1000);
        while p < data.len() {
            let n = step.min(data.len() - p);
            pieces.push(p..p + n);
            p += n;
            step = step * 3 % 3_000_017 + 4096;
        }
        for pair in pieces.chunks(2) {
            for r in pair.iter().rev() {
                assert_eq!(s.offer(r.start as u64, &data[r.clone()]), Offered::Taken);
            }
        }
        assert_eq!(s.end(), data.len() as u64);
        assert_eq!(s.offer(5, b"late"), Offered::Declined);
        let f = s.finish().unwrap();
        assert!(f.early.is_empty());
        let pre = f.made;
        assert!(pre.len() > 20 << 20, "cut only {} bytes", pre.len());
        assert!(
            f.tail == data[pre.len() as usize..],
            "the tail is what was not cut"
        );
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

    /// A tmpfs of a few MiB, unmounted on drop.
    struct SmallFs(tempfile::TempDir);

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    /// When the disk fills mid-stream, what was stored stays stored and
    /// every byte after it comes back in the tail: nothing pushed is lost.
    #[test]
    fn a_full_disk_mid_stream_loses_no_byte() {
        let small = SmallFs(tempfile::tempdir().unwrap());
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=10m", "tmpfs"])
            .arg(small.0.path())
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "mounting a tmpfs for the test failed (needs root)"
        );
        let store = Arc::new(
            Store::open(small.0.path(), SigningKey::from_bytes(&[8; 32]), [8; 32]).unwrap(),
        );
        let data = noise(24 << 20, 0x9E37_79B9_7F4A_7C15);
        let mut s = Streamer::start(store.clone()).unwrap();
        let mut pushed = 0;
        for piece in data.chunks(1 << 20) {
            if s.offer(pushed as u64, piece) != Offered::Taken {
                break;
            }
            pushed += piece.len();
            if pushed % (4 << 20) == 0 {
                // Steps of about 4 MiB: the one that fails has another
                // behind it.
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
        }
        let f = s.finish().unwrap();
        let cut = f.made.len() as usize;
        assert!(cut > 0 && cut < pushed, "cut {cut} of {pushed} bytes");
        assert_eq!(cut + f.tail.len(), pushed);
        let mut back = vec![0u8; cut];
        chunker::read_base(&f.made, 0, &mut back, &Io(&store, &data)).unwrap();
        assert!(back == data[..cut], "the stored prefix reads back");
        assert!(f.tail == data[cut..pushed], "the tail is the rest");
        drop(store);
    }
}
