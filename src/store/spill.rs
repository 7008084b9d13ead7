//! The answers a job hands the store, put in the order of their hashes before any is written.
//!
//! The store keeps its answers under their hashes, so a job's answers, read from its journal
//! in row order, land all over the store's pages. Written a few pages of the job at a time,
//! every transaction rewrote nearly every page of the store: a million-row job wrote 3.4 GB
//! to keep 174 MB. Here a job's answers are split by the first byte of their hash into 256
//! ranges, spilled compressed to an anonymous file once there are more than memory should
//! hold, and handed back a range at a time, each sorted: one transaction per range, which
//! touches only the store's pages of that range, so each is written about once. The answers
//! come in encoded as the store keeps them ([`Kept`]), so that nothing is parsed on the way.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::answer::{Times, encode};
use crate::journal::{Journal, JournalError, Obtained, REUSE_PAGE};

/// Answers held in memory before they are spilled: a job this small is kept in one
/// transaction, as it always was.
const IN_MEMORY: usize = 65_536;
/// Ranges of the hashes' first byte: a ten-million-row job holds about 40,000 answers in
/// memory at a time.
const RANGES: usize = 256;
/// Bytes of a range's answers gathered before they are compressed and written: 256 of them
/// are 8 MB.
const BLOCK: usize = 32 * 1024;
/// zstd's fastest level: the answers repeat their statuses, messages and batch ids, and
/// compress several times at it.
const LEVEL: i32 = 1;

/// An answer as the store's row has it: its hash, when it was obtained (Unix seconds), and
/// its text ([`super::answer::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Kept {
    pub(super) ident: [u8; 16],
    pub(super) obtained: i64,
    pub(super) text: String,
}

/// A job's answers on their way to the store, by hash.
pub(super) struct ByHash {
    dir: PathBuf,
    held: Vec<Kept>,
    spilled: Option<Spilled>,
}

/// Answers spilled: per range, the bytes gathered and the blocks written.
struct Spilled {
    file: File,
    end: u64,
    gathering: Vec<Vec<u8>>,
    blocks: Vec<Vec<Block>>,
    compressor: zstd::bulk::Compressor<'static>,
}

/// A compressed block of a range's answers in the spill file.
struct Block {
    at: u64,
    len: usize,
    raw: usize,
}

impl ByHash {
    /// Spills, when it does, to an anonymous file in `dir`.
    pub(super) fn new(dir: &Path) -> ByHash {
        ByHash {
            dir: dir.to_path_buf(),
            held: Vec::new(),
            spilled: None,
        }
    }

    pub(super) fn push(&mut self, answer: Kept) -> io::Result<()> {
        if let Some(spilled) = &mut self.spilled {
            return spilled.push(&answer);
        }
        self.held.push(answer);
        if self.held.len() >= IN_MEMORY {
            let mut spilled = Spilled::new(&self.dir)?;
            for a in self.held.drain(..) {
                spilled.push(&a)?;
            }
            self.spilled = Some(spilled);
        }
        Ok(())
    }

    /// The job's final answers in `journal`, their fields by the scope's `names`, held or
    /// spilled in `dir`. The journal is read here a page at a time; the answers are encoded
    /// and spilled on a thread of their own a page or two behind, each half of the work on a
    /// core of its own once the output is written.
    pub(super) fn gather<E: From<JournalError>>(
        journal: &Journal,
        names: &[String],
        dir: &Path,
        io: impl Fn(io::Error) -> E,
    ) -> Result<ByHash, E> {
        std::thread::scope(|scope| {
            let (pages, taken) = std::sync::mpsc::sync_channel::<Vec<Obtained>>(2);
            let encode_all = move || {
                let mut by_hash = ByHash::new(dir);
                let mut times = Times::default();
                for Obtained { answer: a, values } in taken.into_iter().flatten() {
                    let Some((obtained, with_time)) = times.of(&a.checked_at) else {
                        continue;
                    };
                    let text = encode(&a, with_time, &values);
                    by_hash.push(Kept {
                        ident: a.ident,
                        obtained,
                        text,
                    })?;
                }
                Ok::<ByHash, io::Error>(by_hash)
            };
            let encoder = std::thread::Builder::new()
                .name("store-encode".into())
                .spawn_scoped(scope, encode_all)
                .map_err(&io)?;
            let mut after = None;
            let read = loop {
                let page = match journal.obtained_answers(after, names) {
                    Ok(page) => page,
                    Err(e) => break Err(e),
                };
                let last = page.last().map(|o| o.answer.key);
                let end = page.len() < REUSE_PAGE;
                // The encoder stopped on an error, which its end says.
                if pages.send(page).is_err() {
                    break Ok(());
                }
                match last {
                    Some(key) if !end => after = Some(key),
                    _ => break Ok(()),
                }
            };
            drop(pages);
            let by_hash = encoder
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("encoding the answers panicked")))
                .map_err(&io)?;
            read?;
            Ok(by_hash)
        })
    }

    /// Hands `keep` the answers a range at a time, ranges in hash order, each sorted by hash.
    /// Spilled ones are read back, decompressed and sorted on a thread of their own, a range
    /// ahead of `keep`, which is left only the store's writing (about half of the time).
    pub(super) fn ranges<E>(
        self,
        mut keep: impl FnMut(&mut Vec<Kept>) -> Result<(), E>,
        io: impl Fn(io::Error) -> E,
    ) -> Result<(), E> {
        let Some(mut spilled) = self.spilled else {
            let mut held = self.held;
            held.sort_unstable_by_key(|a| a.ident);
            return if held.is_empty() {
                Ok(())
            } else {
                keep(&mut held)
            };
        };
        for range in 0..RANGES {
            spilled.write_block(range).map_err(&io)?;
        }
        let (file, blocks) = (&spilled.file, &spilled.blocks);
        std::thread::scope(|scope| {
            let (ready, taken) = std::sync::mpsc::sync_channel(1);
            let read = move || {
                let mut unpack = zstd::bulk::Decompressor::new()?;
                for range in blocks {
                    // `keep` stopped: nothing more is read.
                    if ready.send(read_range(file, range, &mut unpack)).is_err() {
                        break;
                    }
                }
                Ok::<(), io::Error>(())
            };
            let reader = std::thread::Builder::new()
                .name("store-read".into())
                .spawn_scoped(scope, read)
                .map_err(&io)?;
            for answers in taken {
                let mut answers = answers.map_err(&io)?;
                if !answers.is_empty() {
                    keep(&mut answers)?;
                }
            }
            reader
                .join()
                .unwrap_or_else(|_| {
                    Err(io::Error::other(
                        "reading the spilled answers back panicked",
                    ))
                })
                .map_err(&io)
        })
    }
}

/// A range's spilled answers, read back and sorted by hash.
fn read_range(
    file: &File,
    blocks: &[Block],
    unpack: &mut zstd::bulk::Decompressor<'static>,
) -> io::Result<Vec<Kept>> {
    let mut answers = Vec::new();
    for b in blocks {
        let mut packed = vec![0u8; b.len];
        file.read_exact_at(&mut packed, b.at)?;
        let raw = unpack.decompress(&packed, b.raw)?;
        let mut at = &raw[..];
        while !at.is_empty() {
            answers.push(read(&mut at)?);
        }
    }
    answers.sort_unstable_by_key(|a| a.ident);
    Ok(answers)
}

impl Spilled {
    fn new(dir: &Path) -> io::Result<Spilled> {
        Ok(Spilled {
            // Anonymous: the file has no name, so it goes when the run does, however it ends.
            file: tempfile::tempfile_in(dir)?,
            end: 0,
            gathering: vec![Vec::new(); RANGES],
            blocks: (0..RANGES).map(|_| Vec::new()).collect(),
            compressor: zstd::bulk::Compressor::new(LEVEL)?,
        })
    }

    fn push(&mut self, answer: &Kept) -> io::Result<()> {
        let range = usize::from(answer.ident[0]) * RANGES / 256;
        write(answer, &mut self.gathering[range]);
        if self.gathering[range].len() >= BLOCK {
            self.write_block(range)?;
        }
        Ok(())
    }

    fn write_block(&mut self, range: usize) -> io::Result<()> {
        let raw = &mut self.gathering[range];
        if raw.is_empty() {
            return Ok(());
        }
        let packed = self.compressor.compress(raw)?;
        self.file.write_all_at(&packed, self.end)?;
        self.blocks[range].push(Block {
            at: self.end,
            len: packed.len(),
            raw: raw.len(),
        });
        self.end += packed.len() as u64;
        raw.clear();
        Ok(())
    }
}

/// An answer as the spill writes it: its hash, time and text, the text by its length.
fn write(a: &Kept, out: &mut Vec<u8>) {
    out.extend_from_slice(&a.ident);
    out.extend_from_slice(&a.obtained.to_le_bytes());
    out.extend_from_slice(&(a.text.len() as u32).to_le_bytes());
    out.extend_from_slice(a.text.as_bytes());
}

/// The answer [`write()`] wrote at the start of `at`, which moves past it.
fn read(at: &mut &[u8]) -> io::Result<Kept> {
    let ident = take(at)?;
    let obtained = i64::from_le_bytes(take(at)?);
    let len = u32::from_le_bytes(take(at)?) as usize;
    if at.len() < len {
        return Err(damaged());
    }
    let (bytes, rest) = at.split_at(len);
    *at = rest;
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| damaged())?;
    Ok(Kept {
        ident,
        obtained,
        text,
    })
}

fn take<const N: usize>(at: &mut &[u8]) -> io::Result<[u8; N]> {
    let (bytes, rest) = at.split_first_chunk::<N>().ok_or_else(damaged)?;
    *at = rest;
    Ok(*bytes)
}

fn damaged() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the spilled answers read back damaged",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(i: u64) -> Kept {
        let mut ident = [0u8; 16];
        ident[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        Kept {
            ident,
            obtained: 1_796_000_000 + i as i64,
            text: format!(
                r#"["verified",null,"VPA is valid",null,"batch-{}",["NAME {i}"]]"#,
                i / 1000
            ),
        }
    }

    /// Every answer comes back once and whole, whether held or spilled; the ranges come in
    /// hash order and each is sorted, so that the store is written in its key's order.
    #[test]
    fn answers_come_back_whole_in_hash_order() {
        for n in [0, 5, 2 * IN_MEMORY as u64 + 17] {
            let dir = tempfile::tempdir().unwrap();
            let mut by_hash = ByHash::new(dir.path());
            for i in 0..n {
                by_hash.push(answer(i)).unwrap();
            }
            let mut back = Vec::new();
            let mut calls = 0;
            by_hash
                .ranges(
                    |range: &mut Vec<Kept>| {
                        calls += 1;
                        back.append(range);
                        Ok::<(), io::Error>(())
                    },
                    |e| e,
                )
                .unwrap();
            assert_eq!(back.len() as u64, n);
            assert!(back.windows(2).all(|w| w[0].ident <= w[1].ident), "n {n}");
            let mut numbers: Vec<u64> = back
                .iter()
                .map(|a| (a.obtained - 1_796_000_000) as u64)
                .collect();
            numbers.sort_unstable();
            assert!(numbers.iter().copied().eq(0..n));
            for a in back.iter().step_by(997) {
                assert_eq!(*a, answer((a.obtained - 1_796_000_000) as u64));
            }
            let spilled = n >= IN_MEMORY as u64;
            assert_eq!(calls > 1, spilled, "n {n}: {calls} transactions");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }
}
