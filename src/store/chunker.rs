//! Content-defined chunking (fastcdc v2020, blake3 names) and the incremental
//! re-chunking of an edited file: only the neighbourhood of each dirty range
//! is cut again, until a new cut lands on an old chunk boundary; the chunks
//! after it are reused as they are.

use std::io;

use fastcdc::v2020::FastCDC;

use super::manifest::{Extent, Manifest};
use super::ranges::RangeSet;
use super::Hash;

/// Minimum chunk size.
pub const MIN_CHUNK: u32 = 16 * 1024;
/// Average chunk size.
pub const AVG_CHUNK: u32 = 64 * 1024;
/// Maximum chunk size.
pub const MAX_CHUNK: u32 = 256 * 1024;
/// Bytes read per step while re-chunking.
const BLOCK: u64 = 8 << 20;
/// Dirty ranges in one read above which it reads everything at once.
const SCATTERED: usize = 8;
/// Old chunks past the last dirty byte that may be re-cut to realign.
const MAX_EXTRA: u32 = 8;

/// What re-chunking reads from and writes to.
pub trait ChunkIo {
    /// Reads bytes of a stored chunk.
    fn read_chunk(&self, hash: &Hash, within: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Reads freshly written (dirty) bytes of the file.
    fn read_dirty(&self, off: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Stores a chunk (deduplicated by hash).
    fn put_chunk(&self, hash: &Hash, data: &[u8]) -> io::Result<()>;
}

/// Cuts `data` into content-defined chunks; returns (offset, len) pairs.
pub fn cut(data: &[u8]) -> Vec<(usize, usize)> {
    FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| (c.offset, c.length))
        .collect()
}

/// Reads `[off, off+buf.len())` of the new content: dirty bytes, else the
/// base version, else zeros.
pub fn read_overlay(
    base: &Manifest,
    dirty: &RangeSet,
    off: u64,
    buf: &mut [u8],
    io: &dyn ChunkIo,
) -> io::Result<()> {
    let end = off + buf.len() as u64;
    let ranges = dirty.clipped(off, end);
    if ranges.len() > SCATTERED {
        // Many small writes (random I/O): two large reads and copies beat
        // two small reads per range.
        read_base(base, off, buf, io)?;
        let (lo, hi) = (ranges[0].0, ranges[ranges.len() - 1].1);
        let mut staged = vec![0u8; (hi - lo) as usize];
        io.read_dirty(lo, &mut staged)?;
        for (s, e) in ranges {
            buf[(s - off) as usize..(e - off) as usize]
                .copy_from_slice(&staged[(s - lo) as usize..(e - lo) as usize]);
        }
        return Ok(());
    }
    let mut p = off;
    for (s, e) in ranges.into_iter().chain([(end, end)]) {
        read_base(
            base,
            p,
            &mut buf[(p - off) as usize..(s - off) as usize],
            io,
        )?;
        if e > s {
            io.read_dirty(s, &mut buf[(s - off) as usize..(e - off) as usize])?;
        }
        p = e;
    }
    Ok(())
}

/// Reads bytes of the base version (zeros in holes and past its end).
pub fn read_base(base: &Manifest, off: u64, buf: &mut [u8], io: &dyn ChunkIo) -> io::Result<()> {
    let mut p = off;
    let end = off + buf.len() as u64;
    while p < end {
        let dst = &mut buf[(p - off) as usize..];
        match base.extent_at(p) {
            None => {
                dst.fill(0);
                return Ok(());
            }
            Some((s, e, ext)) => {
                let n = (e.min(end) - p) as usize;
                match ext.hash {
                    Some(h) => io.read_chunk(&h, p - s, &mut dst[..n])?,
                    None => dst[..n].fill(0),
                }
                p += n as u64;
            }
        }
    }
    Ok(())
}

struct Stream<'a> {
    base: &'a Manifest,
    dirty: &'a RangeSet,
    size: u64,
    dirty_end: u64,
    extra: u32,
}

impl Stream<'_> {
    /// End of the base chunk containing byte `x - 1`, or `x` in a hole.
    fn data_end_or(&self, x: u64) -> u64 {
        let end = match x.checked_sub(1).and_then(|y| self.base.extent_at(y)) {
            Some((_, e, ext)) if ext.hash.is_some() => e,
            _ => x,
        };
        end.min(self.size)
    }

    /// How far the stream may read once it reached `q`, if further.
    fn extend(&mut self, q: u64) -> Option<u64> {
        if q >= self.size {
            return None;
        }
        let next = self.dirty.first_ending_after(q);
        if let Some((s2, e2)) = next {
            if s2 <= q {
                self.dirty_end = self.dirty_end.max(e2);
                return Some(self.data_end_or(e2));
            }
        }
        if let Some((_, ee, ext)) = self.base.extent_at(q) {
            if ext.hash.is_some() {
                if let Some((s2, e2)) = next {
                    if s2 < ee {
                        self.dirty_end = self.dirty_end.max(e2);
                        return Some(self.data_end_or(e2).max(ee.min(self.size)));
                    }
                }
                if self.extra < MAX_EXTRA {
                    self.extra += 1;
                    return Some(ee.min(self.size));
                }
            }
        }
        None
    }
}

/// The extent of one cut chunk: a hole when it is all zeros, else its
/// hash, after `put` stored it.
pub fn extent_of(
    data: &[u8],
    put: impl FnOnce(&Hash, &[u8]) -> io::Result<()>,
) -> io::Result<Extent> {
    let len = data.len() as u64;
    if data.iter().all(|&b| b == 0) {
        return Ok(Extent { len, hash: None });
    }
    let hash = *blake3::hash(data).as_bytes();
    put(&hash, data)?;
    Ok(Extent {
        len,
        hash: Some(hash),
    })
}

fn emit(out: &mut Manifest, data: &[u8], io: &dyn ChunkIo) -> io::Result<()> {
    out.push(extent_of(data, |h, d| io.put_chunk(h, d))?);
    Ok(())
}

/// Re-chunks from `a` (a base boundary) through the dirty range ending at
/// `e`, and on until a new cut meets an old boundary. Returns where it stopped.
fn stream(
    st: &mut Stream<'_>,
    a: u64,
    e: u64,
    io: &dyn ChunkIo,
    out: &mut Manifest,
) -> io::Result<u64> {
    st.dirty_end = e;
    st.extra = 0;
    let mut hard = st.data_end_or(e);
    let mut q = a;
    let mut carry: Vec<u8> = Vec::new();
    let mut carry_start = a;
    loop {
        if q >= hard {
            match st.extend(q) {
                Some(h) if h > q => hard = h,
                _ => break,
            }
        }
        let n = (hard - q).min(BLOCK) as usize;
        let old = carry.len();
        carry.resize(old + n, 0);
        read_overlay(st.base, st.dirty, q, &mut carry[old..], io)?;
        q += n as u64;
        let cuts = cut(&carry);
        let mut consumed = 0usize;
        for &(off, len) in &cuts[..cuts.len().saturating_sub(1)] {
            emit(out, &carry[off..off + len], io)?;
            consumed = off + len;
            let end = carry_start + consumed as u64;
            if end >= st.dirty_end && end <= st.base.len() && st.base.is_boundary(end) {
                return Ok(end);
            }
        }
        carry.drain(..consumed);
        carry_start += consumed as u64;
    }
    if !carry.is_empty() {
        emit(out, &carry, io)?;
    }
    Ok(q)
}

/// Builds the new version of a file from its base version, the dirty ranges
/// written since, and its new size. `base.len()` must not exceed `size`
/// (shrinking truncates the base first).
pub fn materialize(
    base: &Manifest,
    dirty: &RangeSet,
    size: u64,
    io: &dyn ChunkIo,
) -> io::Result<Manifest> {
    let mut out = Manifest::default();
    let mut st = Stream {
        base,
        dirty,
        size,
        dirty_end: 0,
        extra: 0,
    };
    let mut p = 0u64;
    while p < size {
        let Some((s, e)) = dirty.first_ending_after(p) else {
            base.copy_range(p, size, &mut out);
            break;
        };
        let s = s.max(p);
        if s >= size {
            base.copy_range(p, size, &mut out);
            break;
        }
        let a = match base.extent_at(s) {
            Some((es, _, ext)) if ext.hash.is_some() => es.max(p),
            _ => s,
        };
        base.copy_range(p, a, &mut out);
        p = stream(&mut st, a, e.min(size), io, &mut out)?;
    }
    Ok(out)
}

/// Bytes of a cut chunk and where they start.
pub type Tail = (u64, Vec<u8>);

/// Cuts the base version to `n` bytes: whole chunks before `n` are kept;
/// the bytes of a chunk that straddles `n` are returned with their offset,
/// to be written back as dirty data.
pub fn truncate_base(
    base: &Manifest,
    n: u64,
    io: &dyn ChunkIo,
) -> io::Result<(Manifest, Option<Tail>)> {
    let mut out = Manifest::default();
    match base.extent_at(n) {
        None => {
            base.copy_range(0, base.len().min(n), &mut out);
            Ok((out, None))
        }
        Some((s, _, ext)) if ext.hash.is_some() && s < n => {
            base.copy_range(0, s, &mut out);
            let mut buf = vec![0u8; (n - s) as usize];
            read_base(base, s, &mut buf, io)?;
            Ok((out, Some((s, buf))))
        }
        Some(_) => {
            base.copy_range(0, n, &mut out);
            Ok((out, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// In-memory chunk store and a dirty buffer for exercising the algorithm.
    #[derive(Default)]
    struct Mem {
        chunks: RefCell<HashMap<Hash, Vec<u8>>>,
        dirty: RefCell<Vec<u8>>,
        puts: RefCell<u64>,
    }

    impl ChunkIo for Mem {
        fn read_chunk(&self, hash: &Hash, within: u64, buf: &mut [u8]) -> io::Result<()> {
            let c = self.chunks.borrow();
            let data = c
                .get(hash)
                .ok_or_else(|| io::Error::other("missing chunk"))?;
            buf.copy_from_slice(&data[within as usize..within as usize + buf.len()]);
            Ok(())
        }
        fn read_dirty(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
            let d = self.dirty.borrow();
            buf.copy_from_slice(&d[off as usize..off as usize + buf.len()]);
            Ok(())
        }
        fn put_chunk(&self, hash: &Hash, data: &[u8]) -> io::Result<()> {
            let mut c = self.chunks.borrow_mut();
            if !c.contains_key(hash) {
                *self.puts.borrow_mut() += data.len() as u64;
                c.insert(*hash, data.to_vec());
            }
            Ok(())
        }
    }

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn content(m: &Manifest, io: &Mem) -> Vec<u8> {
        let mut buf = vec![0u8; m.len() as usize];
        read_base(m, 0, &mut buf, io).expect("read");
        buf
    }

    /// Writes `data` at `off` over `base` and materializes.
    fn write(base: &Manifest, io: &Mem, off: u64, data: &[u8], size: u64) -> Manifest {
        let mut d = io.dirty.borrow_mut();
        d.clear();
        d.resize(size as usize, 0);
        d[off as usize..off as usize + data.len()].copy_from_slice(data);
        drop(d);
        let mut r = RangeSet::new();
        r.insert(off, off + data.len() as u64);
        materialize(base, &r, size, io).expect("materialize")
    }

    #[test]
    fn whole_file_then_small_edit_restores_only_neighbourhood() {
        let io = Mem::default();
        let data = random(8 << 20, 1);
        let m = write(&Manifest::default(), &io, 0, &data, data.len() as u64);
        assert_eq!(content(&m, &io), data);
        let before = *io.puts.borrow();
        let mut expect = data.clone();
        expect[4_000_000..4_004_096].copy_from_slice(&random(4096, 2));
        let m2 = write(
            &m,
            &io,
            4_000_000,
            &expect[4_000_000..4_004_096],
            data.len() as u64,
        );
        assert_eq!(content(&m2, &io), expect);
        let added = *io.puts.borrow() - before;
        assert!(
            added <= 512 * 1024,
            "stored {added} new bytes for a 4 KiB edit"
        );
    }

    #[test]
    fn holes_and_sparse_writes_read_as_zeros() {
        let io = Mem::default();
        let size = 5u64 << 30;
        let m = write(&Manifest::default(), &io, size - 10, b"0123456789", size);
        assert_eq!(m.len(), size);
        let mut buf = [1u8; 20];
        read_base(&m, size - 20, &mut buf, &io).expect("read");
        assert_eq!(&buf[..10], &[0u8; 10]);
        assert_eq!(&buf[10..], b"0123456789");
    }

    #[test]
    fn truncate_keeps_prefix() {
        let io = Mem::default();
        let data = random(1 << 20, 3);
        let m = write(&Manifest::default(), &io, 0, &data, data.len() as u64);
        let (t, tail) = truncate_base(&m, 300_000, &io).expect("truncate");
        let (off, bytes) = tail.expect("straddling chunk");
        assert_eq!(&data[off as usize..300_000], &bytes[..]);
        assert!(t.len() <= 300_000);
    }

    #[test]
    fn identical_content_dedups() {
        let io = Mem::default();
        let data = random(4 << 20, 4);
        write(&Manifest::default(), &io, 0, &data, data.len() as u64);
        let before = *io.puts.borrow();
        write(&Manifest::default(), &io, 0, &data, data.len() as u64);
        assert_eq!(*io.puts.borrow(), before);
    }

    /// Pins chunk boundaries over seeded data: a dependency bump that moves
    /// them must fail here, loudly.
    #[test]
    fn chunk_boundaries_are_pinned() {
        let data = random(2 << 20, 42);
        let lens: Vec<usize> = cut(&data).iter().map(|c| c.1).collect();
        let digest = blake3::hash(format!("{lens:?}").as_bytes())
            .to_hex()
            .to_string();
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        assert_eq!(&digest[..16], PINNED, "chunk boundaries moved: {lens:?}");
    }
    const PINNED: &str = "dd7baa41088cc11e";
}
