//! Moving only the changed bytes of an edited file. Two versions of a file
//! share all chunks outside the neighbourhood of an edit; inside it, the
//! old and new bytes still share a common start and end (an overwrite
//! changes a few KiB, an insert shifts the rest). A member that holds the
//! old version asks the author for the bytes in between only, rebuilds the
//! new chunks and checks each against its hash before storing it.

use crate::store::manifest::{Extent, Manifest};
use crate::store::{Hash, Store};

/// Largest changed neighbourhood worth a delta (beyond it, chunks move
/// one by one as they are read).
pub const MAX_REGION: u64 = 16 << 20;

/// The extents two manifests do not share: `(first, old_end, new_end)`,
/// indices into each manifest's extents (the common prefix ends at
/// `first`, the common suffix starts at `old_end` / `new_end`).
pub fn changed(old: &Manifest, new: &Manifest) -> (usize, usize, usize) {
    let (o, n) = (old.extents(), new.extents());
    let p = o.iter().zip(n).take_while(|(a, b)| a == b).count();
    let s = o[p..]
        .iter()
        .rev()
        .zip(n[p..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    (p, o.len() - s, n.len() - s)
}

/// The bytes of `extents` (holes read as zeros), `None` when too large or a
/// chunk is not stored here.
pub fn region_bytes(store: &Store, extents: &[Extent]) -> Option<Vec<u8>> {
    let total: u64 = extents.iter().map(|e| e.len).sum();
    if total > MAX_REGION {
        return None;
    }
    let mut out = vec![0u8; total as usize];
    let mut at = 0usize;
    for e in extents {
        let len = e.len as usize;
        if let Some(h) = &e.hash {
            store.read_chunk(h, 0, &mut out[at..at + len]).ok()?;
        }
        at += len;
    }
    Some(out)
}

/// What the author sends: how many bytes of the old region start and end
/// the new one, and the bytes in between.
pub fn diff(old: &[u8], new: &[u8]) -> (u64, u64, Vec<u8>) {
    let pre = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let max_suf = old.len().min(new.len()) - pre;
    let suf = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take(max_suf)
        .take_while(|(a, b)| a == b)
        .count();
    (pre as u64, suf as u64, new[pre..new.len() - suf].to_vec())
}

/// Rebuilds the new region from the old one and the author's delta, and
/// cuts it into the new chunks, each verified against its hash. `None`
/// when anything does not add up.
pub fn rebuild(
    old: &[u8],
    pre: u64,
    suf: u64,
    middle: &[u8],
    new_extents: &[Extent],
) -> Option<Vec<(Hash, Vec<u8>)>> {
    let (pre, suf) = (pre as usize, suf as usize);
    if pre.checked_add(suf)? > old.len() {
        return None;
    }
    let mut new = Vec::with_capacity(pre + middle.len() + suf);
    new.extend_from_slice(&old[..pre]);
    new.extend_from_slice(middle);
    new.extend_from_slice(&old[old.len() - suf..]);
    let total: u64 = new_extents.iter().map(|e| e.len).sum();
    if total != new.len() as u64 {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    for e in new_extents {
        let bytes = &new[at..at + e.len as usize];
        at += e.len as usize;
        if let Some(h) = e.hash {
            if *blake3::hash(bytes).as_bytes() != h {
                return None;
            }
            out.push((h, bytes.to_vec()));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_and_rebuild_round_trip() {
        let old: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut over = old.clone();
        over[40_000..44_096].fill(9);
        let (p, s, m) = diff(&old, &over);
        assert_eq!(m.len(), 4096);
        let ext = vec![
            Extent {
                len: 60_000,
                hash: Some(*blake3::hash(&over[..60_000]).as_bytes()),
            },
            Extent {
                len: 40_000,
                hash: Some(*blake3::hash(&over[60_000..]).as_bytes()),
            },
        ];
        let chunks = rebuild(&old, p, s, &m, &ext).expect("rebuild");
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].1, over[..60_000]);
        // One byte inserted at the start: one byte travels.
        let mut ins = vec![b'x'];
        ins.extend_from_slice(&old);
        let (p, s, m) = diff(&old, &ins);
        assert_eq!((p, s, m.as_slice()), (0, old.len() as u64, &b"x"[..]));
        let ext = vec![Extent {
            len: ins.len() as u64,
            hash: Some(*blake3::hash(&ins).as_bytes()),
        }];
        assert!(rebuild(&old, p, s, &m, &ext).is_some());
        // Wrong bytes are refused.
        assert!(rebuild(&old, p, s, b"y", &ext).is_none());
    }

    #[test]
    fn changed_extents_are_the_middle() {
        let e = |b: u8, len: u64| Extent {
            len,
            hash: Some([b; 32]),
        };
        let old = Manifest::from_extents(vec![e(1, 10), e(2, 10), e(3, 10), e(4, 10)]);
        let new = Manifest::from_extents(vec![e(1, 10), e(5, 12), e(4, 10)]);
        assert_eq!(changed(&old, &new), (1, 3, 2));
        assert_eq!(changed(&old, &old), (4, 4, 4));
    }
}
