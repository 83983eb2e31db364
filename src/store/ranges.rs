//! A set of byte ranges (the dirty parts of a file being written).

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// True when nothing is in the set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds `[start, end)`, merging with overlapping or touching ranges.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        let overlapping: Vec<(u64, u64)> =
            self.map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in overlapping {
            self.map.remove(&s);
            end = end.max(e);
        }
        self.map.insert(start, end);
    }

    /// Drops everything at or after `at`.
    pub fn truncate(&mut self, at: u64) {
        let tail: Vec<u64> = self.map.range(at..).map(|(&s, _)| s).collect();
        for s in tail {
            self.map.remove(&s);
        }
        if let Some((&s, e)) = self.map.range_mut(..at).next_back() {
            if *e > at {
                *e = at;
            }
            if s >= *e {
                self.map.remove(&s);
            }
        }
    }

    /// The first range that ends after `p`.
    pub fn first_ending_after(&self, p: u64) -> Option<(u64, u64)> {
        if let Some((&s, &e)) = self.map.range(..=p).next_back() {
            if e > p {
                return Some((s, e));
            }
        }
        self.map.range(p..).next().map(|(&s, &e)| (s, e))
    }

    /// Ranges intersecting `[from, to)`, clipped to it.
    pub fn clipped(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut p = from;
        while p < to {
            match self.first_ending_after(p) {
                Some((s, e)) if s < to => {
                    out.push((s.max(p), e.min(to)));
                    p = e;
                }
                _ => break,
            }
        }
        out
    }

    /// Total bytes in the set.
    pub fn total(&self) -> u64 {
        self.map.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_truncates() {
        let mut r = RangeSet::new();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 30);
        assert_eq!(r.clipped(0, 100), vec![(10, 40)]);
        r.insert(50, 60);
        r.insert(5, 12);
        assert_eq!(r.clipped(0, 100), vec![(5, 40), (50, 60)]);
        r.truncate(55);
        assert_eq!(r.clipped(0, 100), vec![(5, 40), (50, 55)]);
        r.truncate(50);
        assert_eq!(r.clipped(0, 100), vec![(5, 40)]);
        assert_eq!(r.first_ending_after(39), Some((5, 40)));
        assert_eq!(r.first_ending_after(40), None);
        assert_eq!(r.total(), 35);
    }
}
