//! An external sort of fixed-size records: sorted runs spilled to anonymous files in the state
//! directory, merged back in order. Planning finds duplicate identifiers by sorting their
//! hashes, in memory that does not grow with the input: looking each row up in an index of
//! hashes (random order) rewrote most of that index's pages at every transaction once the
//! journal outgrew the page cache.
//!
//! Written here rather than taken from `extsort`, which builds `skeptic` (a Markdown parser and
//! `cargo_metadata`) into every build for its README's tests: the records here are a fixed 24
//! bytes, and the whole of what is needed is a buffer, a spill and a merge.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A record the sort can spill: ordered, and written as a fixed number of bytes.
pub(super) trait Record: Ord + Copy {
    const SIZE: usize;
    fn write(&self, out: &mut [u8]);
    fn read(bytes: &[u8]) -> Self;
}

/// An identifier's hash, read as a big-endian number (the bytes' order, compared in two
/// instructions where the bytes took a `memcmp` each: comparing was most of the sort's time),
/// and the row it was first seen on.
impl Record for (u128, u64) {
    const SIZE: usize = 24;
    fn write(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.0.to_be_bytes());
        out[16..24].copy_from_slice(&self.1.to_be_bytes());
    }
    fn read(bytes: &[u8]) -> Self {
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&bytes[..16]);
        (u128::from_be_bytes(hash), u64_at(bytes, 16))
    }
}

/// A duplicate row and the row whose outcome it takes.
impl Record for (u64, u64) {
    const SIZE: usize = 16;
    fn write(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.0.to_be_bytes());
        out[8..16].copy_from_slice(&self.1.to_be_bytes());
    }
    fn read(bytes: &[u8]) -> Self {
        (u64_at(bytes, 0), u64_at(bytes, 8))
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Records pushed in any order, read back sorted.
pub(super) struct ExternalSort<T: Record> {
    dir: PathBuf,
    buffer: Vec<T>,
    capacity: usize,
    runs: Vec<File>,
}

impl<T: Record> ExternalSort<T> {
    /// A sort holding up to `capacity` records in memory, spilling to files in `dir`.
    pub(super) fn new(dir: &Path, capacity: usize) -> ExternalSort<T> {
        ExternalSort {
            dir: dir.to_path_buf(),
            buffer: Vec::new(),
            capacity: capacity.max(1),
            runs: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, record: T) -> io::Result<()> {
        if self.buffer.len() == self.capacity {
            self.spill()?;
        }
        self.buffer.push(record);
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.buffer.sort_unstable();
        // Anonymous: the file has no name, so it goes when the run does, however it ends.
        let mut out = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(&self.dir)?);
        let mut bytes = vec![0u8; T::SIZE];
        for r in self.buffer.drain(..) {
            r.write(&mut bytes);
            out.write_all(&bytes)?;
        }
        let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.rewind()?;
        self.runs.push(file);
        Ok(())
    }

    /// Every record pushed, in order.
    pub(super) fn sorted(mut self) -> io::Result<Sorted<T>> {
        if self.runs.is_empty() {
            self.buffer.sort_unstable();
            return Ok(Sorted::Memory(self.buffer.into_iter()));
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        // A smaller read buffer per run when there are many, so that the merge's memory stays
        // near the sort's.
        let each = (T::SIZE * self.capacity / self.runs.len()).clamp(1 << 12, 1 << 20);
        let mut runs: Vec<BufReader<File>> = self
            .runs
            .into_iter()
            .map(|f| BufReader::with_capacity(each, f))
            .collect();
        let mut heads = BinaryHeap::new();
        for (i, run) in runs.iter_mut().enumerate() {
            if let Some(r) = next(run)? {
                heads.push(Reverse((r, i)));
            }
        }
        Ok(Sorted::Merge { runs, heads })
    }
}

fn next<T: Record>(run: &mut BufReader<File>) -> io::Result<Option<T>> {
    let mut bytes = [0u8; 32];
    let bytes = &mut bytes[..T::SIZE];
    match run.read_exact(bytes) {
        Ok(()) => Ok(Some(T::read(bytes))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// The records of an [`ExternalSort`], in order.
pub(super) enum Sorted<T: Record> {
    Memory(std::vec::IntoIter<T>),
    Merge {
        runs: Vec<BufReader<File>>,
        heads: BinaryHeap<Reverse<(T, usize)>>,
    },
}

impl<T: Record> Iterator for Sorted<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<io::Result<T>> {
        match self {
            Sorted::Memory(records) => records.next().map(Ok),
            Sorted::Merge { runs, heads } => {
                let Reverse((record, i)) = heads.pop()?;
                match next(&mut runs[i]) {
                    Ok(Some(r)) => heads.push(Reverse((r, i))),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                Some(Ok(record))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted<T: Record + std::fmt::Debug>(records: &[T], capacity: usize) -> Vec<T> {
        let dir = tempfile::tempdir().unwrap();
        let mut sort = ExternalSort::new(dir.path(), capacity);
        for r in records {
            sort.push(*r).unwrap();
        }
        let out: Vec<T> = sort.sorted().unwrap().map(Result::unwrap).collect();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the runs have no names"
        );
        out
    }

    /// In memory, spilled to one run and to many, the same order as sorting in memory.
    #[test]
    fn sorts_across_spilled_runs() {
        let pairs: Vec<(u64, u64)> = (0..10_007u64).map(|i| ((i * 7_919) % 1_000, i)).collect();
        let mut expected = pairs.clone();
        expected.sort();
        for capacity in [1, 3, 1_000, 20_000] {
            assert_eq!(sorted(&pairs, capacity), expected, "capacity {capacity}");
        }
        let hashes: Vec<(u128, u64)> = (0..5_000u64)
            .map(|i| {
                let mut h = [0u8; 16];
                h[0] = (i % 251) as u8;
                h[15] = (i % 7) as u8;
                (u128::from_be_bytes(h), 5_000 - i)
            })
            .collect();
        let mut expected = hashes.clone();
        expected.sort();
        assert_eq!(sorted(&hashes, 64), expected);
        assert!(sorted::<(u64, u64)>(&[], 4).is_empty());
    }
}
