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
const HEADER_LEN: u64 = 4 + 4 + 32;
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
}

/// The set of pack files under one directory.
pub struct Packs {
    dir: PathBuf,
    writer: Mutex<Writer>,
    readers: RwLock<HashMap<u32, Arc<File>>>,
    unsynced: Mutex<HashSet<u32>>,
}

fn pack_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("pack-{id:06}.dat"))
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
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix("pack-")
                .and_then(|s| s.strip_suffix(".dat"))
                .and_then(|s| s.parse::<u32>().ok())
            {
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
            writer: Mutex::new(Writer { id, file, len }),
            readers: RwLock::new(readers),
            unsynced: Mutex::new(HashSet::new()),
        })
    }

    /// Appends a chunk and returns its location. Not durable until [`Packs::sync`].
    pub fn append(&self, hash: &Hash, data: &[u8]) -> io::Result<Loc> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("chunk too large"))?;
        let mut w = self
            .writer
            .lock()
            .map_err(|_| io::Error::other("pack lock poisoned"))?;
        if w.len >= PACK_LIMIT {
            let id = w.id + 1;
            let file = Arc::new(open_pack(&self.dir, id)?);
            self.readers
                .write()
                .map_err(|_| io::Error::other("pack lock poisoned"))?
                .insert(id, file.clone());
            *w = Writer { id, file, len: 0 };
        }
        let mut head = Vec::with_capacity(HEADER_LEN as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&len.to_le_bytes());
        head.extend_from_slice(hash);
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
        if let Some(f) = self
            .readers
            .read()
            .map_err(|_| io::Error::other("pack lock poisoned"))?
            .get(&id)
        {
            return Ok(f.clone());
        }
        let f = Arc::new(open_pack(&self.dir, id)?);
        self.readers
            .write()
            .map_err(|_| io::Error::other("pack lock poisoned"))?
            .insert(id, f.clone());
        Ok(f)
    }

    /// Reads `buf.len()` bytes of a chunk starting `within` bytes into it.
    pub fn read(&self, loc: &Loc, within: u64, buf: &mut [u8]) -> io::Result<()> {
        if within + buf.len() as u64 > u64::from(loc.len) {
            return Err(io::Error::other("read past the end of a chunk"));
        }
        self.reader(loc.pack)?
            .read_exact_at(buf, loc.offset + within)
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

    /// Total bytes in all pack files.
    pub fn disk_bytes(&self) -> u64 {
        let Ok(readers) = self.readers.read() else {
            return 0;
        };
        readers
            .values()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}
