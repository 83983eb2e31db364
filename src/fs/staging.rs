//! Where the new bytes of a file being written wait until they are cut into
//! chunks: in memory while the file is small, in a sparse file in the store
//! once it grows past [`MEM_LIMIT`]. Small files thus never create (and
//! delete) a file on the home's filesystem.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest offset kept in memory before spilling to a staging file.
pub const MEM_LIMIT: u64 = 4 << 20;

/// Staged bytes, addressed by file offset; unwritten bytes read as zeros.
pub enum Staging {
    /// Bytes `0..len` in memory.
    Mem(Vec<u8>),
    /// A sparse file and its path.
    Disk(File, PathBuf),
}

impl Staging {
    /// Writes `data` at `off`, spilling to a file at `path()` when needed.
    pub fn write(
        &mut self,
        off: u64,
        data: &[u8],
        path: impl FnOnce() -> PathBuf,
    ) -> io::Result<()> {
        let end = off + data.len() as u64;
        if let Staging::Mem(v) = self {
            if end <= MEM_LIMIT {
                let end = end as usize;
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[off as usize..end].copy_from_slice(data);
                return Ok(());
            }
            let p = path();
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)?;
            f.write_all_at(v, 0)?;
            *self = Staging::Disk(f, p);
        }
        match self {
            Staging::Disk(f, _) => f.write_all_at(data, off),
            Staging::Mem(_) => Ok(()),
        }
    }

    /// Reads staged bytes at `off` (zeros where nothing was written).
    pub fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Staging::Mem(v) => {
                let start = (off as usize).min(v.len());
                let n = (v.len() - start).min(buf.len());
                buf[..n].copy_from_slice(&v[start..start + n]);
                buf[n..].fill(0);
                Ok(())
            }
            Staging::Disk(f, _) => {
                let mut done = 0;
                while done < buf.len() {
                    let n = f.read_at(&mut buf[done..], off + done as u64)?;
                    if n == 0 {
                        buf[done..].fill(0);
                        break;
                    }
                    done += n;
                }
                Ok(())
            }
        }
    }

    /// Forgets everything at or past `n`.
    pub fn truncate(&mut self, n: u64) {
        match self {
            Staging::Mem(v) => v.truncate(n.min(v.len() as u64) as usize),
            Staging::Disk(f, _) => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = f.set_len(n.min(len));
            }
        }
    }

    /// The staging file, if the bytes spilled to one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Staging::Disk(_, p) => Some(p),
            Staging::Mem(_) => None,
        }
    }
}

impl Default for Staging {
    fn default() -> Staging {
        Staging::Mem(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_past_the_limit_and_keeps_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Staging::default();
        s.write(10, b"abc", || dir.path().join("x")).expect("write");
        assert!(s.path().is_none());
        s.write(MEM_LIMIT, b"far", || dir.path().join("x"))
            .expect("write");
        assert!(s.path().is_some());
        let mut b = [9u8; 5];
        s.read(9, &mut b).expect("read");
        assert_eq!(&b, b"\0abc\0");
        s.read(MEM_LIMIT, &mut b[..3]).expect("read");
        assert_eq!(&b[..3], b"far");
    }
}
