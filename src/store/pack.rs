//! Pack files: chunk bytes appended to a few large files instead of one file
//! per chunk. The index (hash → location) lives in redb; a pack only holds a
//! small header per chunk so that an index could be rebuilt from the packs.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::Hash;

/// A pack is closed and a new one started past this size.
const PACK_LIMIT: u64 = 1 << 30;
/// Per-chunk header: magic, length, blake3 hash.
pub(super) const HEADER_LEN: u64 = 4 + 4 + 32;
const MAGIC: &[u8; 4] = b"CHK1";

/// Where a chunk's bytes are: pack number, offset of the bytes, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loc {
    /// Pack file number.
    pub pack: u32,
    /// Offset of the chunk bytes (after the header) in the pack.
    pub offset: u64,
    /// Chunk length in bytes.
    pub len: u32,
}

struct Writer {
    id: u32,
    file: Arc<File>,
    len: u64,
    /// The same pack opened for direct I/O (`None` where the filesystem
    /// refuses it).
    direct: Option<File>,
    /// Buffer of batched appends, reused.
    batch: Vec<u8>,
}

/// Reads up to this size go through a descriptor without read-ahead.
const SMALL_READ: usize = 16 << 10;

/// Alignment of direct writes (offset, length and memory).
const ALIGN: usize = 4096;

fn open_direct(dir: &Path, id: u32) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(pack_path(dir, id))
        .ok()
}

/// The set of pack files under one directory.
pub struct Packs {
    dir: PathBuf,
    writer: Mutex<Writer>,
    readers: RwLock<HashMap<u32, Arc<File>>>,
    /// A second descriptor per pack for small reads, with the kernel's
    /// read-ahead off (see [`Packs::read`]).
    pickers: RwLock<HashMap<u32, Arc<File>>>,
    unsynced: Mutex<HashSet<u32>>,
}

/// The header written before a chunk's bytes.
fn header(hash: &Hash, len: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..].copy_from_slice(hash);
    h
}

fn pack_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("pack-{id:06}.dat"))
}

/// The number of the pack file called `name` (`pack-NNNNNN.dat`).
fn pack_id(name: &std::ffi::OsStr) -> Option<u32> {
    name.to_str()?
        .strip_prefix("pack-")?
        .strip_suffix(".dat")?
        .parse()
        .ok()
}

fn open_pack(dir: &Path, id: u32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(false)
        .write(true)
        .create(true)
        .truncate(false)
        .open(pack_path(dir, id))
}

impl Packs {
    /// Opens (or creates) the packs in `dir`; appends continue in the newest.
    pub fn open(dir: &Path) -> io::Result<Packs> {
        std::fs::create_dir_all(dir)?;
        let mut newest = 0u32;
        for entry in std::fs::read_dir(dir)? {
            if let Some(n) = pack_id(&entry?.file_name()) {
                newest = newest.max(n);
            }
        }
        let id = newest.max(1);
        let file = Arc::new(open_pack(dir, id)?);
        let len = file.metadata()?.len();
        let mut readers = HashMap::new();
        readers.insert(id, file.clone());
        Ok(Packs {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                id,
                file,
                len,
                direct: open_direct(dir, id),
                batch: Vec::new(),
            }),
            readers: RwLock::new(readers),
            pickers: RwLock::new(HashMap::new()),
            unsynced: Mutex::new(HashSet::new()),
        })
    }

    /// The writer, on a new pack when the current one is full.
    fn writer(&self) -> io::Result<std::sync::MutexGuard<'_, Writer>> {
        let mut w = self.locked()?;
        if w.len >= PACK_LIMIT {
            self.start_next(&mut w)?;
        }
        Ok(w)
    }

    fn locked(&self) -> io::Result<std::sync::MutexGuard<'_, Writer>> {
        self.writer
            .lock()
            .map_err(|_| io::Error::other("pack lock poisoned"))
    }

    /// Moves appends on to a new pack after the current one.
    fn start_next(&self, w: &mut Writer) -> io::Result<()> {
        let id = w.id + 1;
        let file = Arc::new(open_pack(&self.dir, id)?);
        self.readers
            .write()
            .map_err(|_| io::Error::other("pack lock poisoned"))?
            .insert(id, file.clone());
        let batch = std::mem::take(&mut w.batch);
        *w = Writer {
            id,
            file,
            len: 0,
            direct: open_direct(&self.dir, id),
            batch,
        };
        Ok(())
    }

    /// Appends chunks with one write that bypasses the page cache where
    /// the filesystem allows it (the bytes of a file being written go to
    /// disk without a second copy in memory), and returns their
    /// locations. The batch starts on a 4 KiB boundary of the pack: the
    /// gap before it reads as zeros. Not durable until [`Packs::sync`].
    pub fn append_batch(&self, chunks: &[(Hash, &[u8])]) -> io::Result<Vec<Loc>> {
        let mut w = self.writer()?;
        let at = w.len.next_multiple_of(ALIGN as u64);
        let total: usize = chunks
            .iter()
            .map(|(_, d)| HEADER_LEN as usize + d.len())
            .sum();
        let padded = total.next_multiple_of(ALIGN);
        // An aligned window of the reused buffer.
        let mut buf = std::mem::take(&mut w.batch);
        if buf.len() < padded + ALIGN {
            buf.resize(padded + ALIGN, 0);
        }
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        let win = &mut buf[start..start + padded];
        win[total..].fill(0);
        let mut locs = Vec::with_capacity(chunks.len());
        let mut p = 0;
        for (hash, data) in chunks {
            let len = u32::try_from(data.len()).map_err(|_| io::Error::other("chunk too large"))?;
            win[p..p + HEADER_LEN as usize].copy_from_slice(&header(hash, len));
            p += HEADER_LEN as usize;
            win[p..p + data.len()].copy_from_slice(data);
            locs.push(Loc {
                pack: w.id,
                offset: at + p as u64,
                len,
            });
            p += data.len();
        }
        let mut written = match &w.direct {
            Some(d) => d.write_all_at(win, at),
            None => w.file.write_all_at(&win[..total], at),
        };
        if written
            .as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL))
        {
            // Direct writes refused after all (alignment): buffered ones.
            w.direct = None;
            written = w.file.write_all_at(&win[..total], at);
        }
        w.batch = buf;
        if let Err(e) = written {
            let _ = w.file.set_len(w.len);
            return Err(e);
        }
        // The next append overwrites the padding.
        w.len = at + total as u64;
        if let Ok(mut u) = self.unsynced.lock() {
            u.insert(w.id);
        }
        Ok(locs)
    }

    /// Appends a chunk and returns its location. Not durable until [`Packs::sync`].
    pub fn append(&self, hash: &Hash, data: &[u8]) -> io::Result<Loc> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("chunk too large"))?;
        let mut w = self.writer()?;
        let head = header(hash, len);
        let at = w.len;
        let written = w
            .file
            .write_all_at(&head, at)
            .and_then(|()| w.file.write_all_at(data, at + HEADER_LEN));
        if let Err(e) = written {
            // Leave no half-written tail behind the append position.
            let _ = w.file.set_len(at);
            return Err(e);
        }
        w.len += HEADER_LEN + data.len() as u64;
        if let Ok(mut u) = self.unsynced.lock() {
            u.insert(w.id);
        }
        Ok(Loc {
            pack: w.id,
            offset: at + HEADER_LEN,
            len,
        })
    }

    fn reader(&self, id: u32) -> io::Result<Arc<File>> {
        Self::open_in(&self.readers, &self.dir, id, false)
    }

    /// The descriptor of pack `id` in `map`, opened (not created: a pack
    /// removed by compaction stays gone) when not there yet; `random`
    /// turns the kernel's read-ahead off on a new one.
    fn open_in(
        map: &RwLock<HashMap<u32, Arc<File>>>,
        dir: &Path,
        id: u32,
        random: bool,
    ) -> io::Result<Arc<File>> {
        let poisoned = || io::Error::other("pack lock poisoned");
        if let Some(f) = map.read().map_err(|_| poisoned())?.get(&id) {
            return Ok(f.clone());
        }
        let f = File::open(pack_path(dir, id))?;
        if random {
            use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
            // Only a hint: without it reads are correct, just slower.
            let _ = posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_RANDOM);
        }
        let f = Arc::new(f);
        map.write().map_err(|_| poisoned())?.insert(id, f.clone());
        Ok(f)
    }

    /// Reads `buf.len()` bytes of a chunk starting `within` bytes into it.
    /// A small read (the kernel sends those for files read at random:
    /// sequential ones come in large read-ahead requests) goes through a
    /// descriptor without read-ahead, so that 4 KiB asked reads 4 KiB from
    /// the disk, not the pack's next 128 KiB as well.
    pub fn read(&self, loc: &Loc, within: u64, buf: &mut [u8]) -> io::Result<()> {
        if within + buf.len() as u64 > u64::from(loc.len) {
            return Err(io::Error::other("read past the end of a chunk"));
        }
        let f = if buf.len() <= SMALL_READ {
            Self::open_in(&self.pickers, &self.dir, loc.pack, true)?
        } else {
            self.reader(loc.pack)?
        };
        f.read_exact_at(buf, loc.offset + within)
    }

    /// Asks the kernel to start reading the bytes at `locs` into the page
    /// cache now, so that the reads that follow find them there (packs
    /// are written past the cache). Only a hint.
    pub fn will_need(&self, locs: &[Loc]) {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        for loc in locs {
            if let Ok(f) = self.reader(loc.pack) {
                let _ = posix_fadvise(
                    f.as_ref(),
                    loc.offset as i64,
                    i64::from(loc.len),
                    PosixFadviseAdvice::POSIX_FADV_WILLNEED,
                );
            }
        }
    }

    /// Makes every appended chunk durable.
    pub fn sync(&self) -> io::Result<()> {
        let ids: Vec<u32> = match self.unsynced.lock() {
            Ok(mut u) => u.drain().collect(),
            Err(_) => return Err(io::Error::other("pack lock poisoned")),
        };
        for id in ids {
            self.reader(id)?.sync_data()?;
        }
        Ok(())
    }

    /// The pack appends go to.
    pub fn writer_id(&self) -> io::Result<u32> {
        Ok(self.locked()?.id)
    }

    /// Closes the pack appends go to (unless it is empty) and starts the
    /// next, so that the closed one can be compacted.
    pub fn roll(&self) -> io::Result<()> {
        let mut w = self.locked()?;
        if w.len > 0 {
            self.start_next(&mut w)?;
        }
        Ok(())
    }

    /// Every pack file: (number, size in bytes).
    pub fn list(&self) -> io::Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(n) = pack_id(&entry.file_name()) {
                out.push((n, entry.metadata()?.len()));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Deletes pack `id` (never the one appends go to). Reads already
    /// holding it finish; later ones fail with `NotFound`.
    pub fn remove(&self, id: u32) -> io::Result<()> {
        if self.writer_id()? == id {
            return Err(io::Error::other("the pack being appended to"));
        }
        for map in [&self.readers, &self.pickers] {
            map.write()
                .map_err(|_| io::Error::other("pack lock poisoned"))?
                .remove(&id);
        }
        if let Ok(mut u) = self.unsynced.lock() {
            u.remove(&id);
        }
        match std::fs::remove_file(pack_path(&self.dir, id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Total bytes in all pack files.
    pub fn disk_bytes(&self) -> u64 {
        self.list()
            .map(|l| l.iter().map(|(_, len)| len).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Single appends and batches, interleaved, read back byte for byte,
    /// also from a reopened set of packs, and a batch starts aligned.
    #[test]
    fn batches_and_single_appends_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = |n: usize, k: u8| {
            (0..n)
                .map(|i| (i * 7 + k as usize) as u8)
                .collect::<Vec<u8>>()
        };
        let chunks: Vec<(Hash, Vec<u8>)> = (0..9u8)
            .map(|k| ([k; 32], bytes(1000 + k as usize * 33_333, k)))
            .collect();
        let packs = Packs::open(dir.path()).unwrap();
        let mut locs = vec![packs.append(&chunks[0].0, &chunks[0].1).unwrap()];
        let batch: Vec<(Hash, &[u8])> = chunks[1..5].iter().map(|(h, d)| (*h, &d[..])).collect();
        let b = packs.append_batch(&batch).unwrap();
        assert_eq!(
            b[0].offset % ALIGN as u64,
            HEADER_LEN,
            "a batch starts aligned"
        );
        locs.extend(b);
        locs.push(packs.append(&chunks[5].0, &chunks[5].1).unwrap());
        let batch: Vec<(Hash, &[u8])> = chunks[6..].iter().map(|(h, d)| (*h, &d[..])).collect();
        locs.extend(packs.append_batch(&batch).unwrap());
        packs.sync().unwrap();
        let check = |packs: &Packs| {
            for ((_, data), loc) in chunks.iter().zip(&locs) {
                let mut buf = vec![0u8; data.len()];
                packs.read(loc, 0, &mut buf).unwrap();
                assert!(buf == *data);
            }
        };
        check(&packs);
        drop(packs);
        check(&Packs::open(dir.path()).unwrap());
    }
}
