//! Help for the writer of a large file (Linux): while one thread writes
//! it from the start, another puts its last pages into the page cache,
//! from the end back, until the two meet. The writer then copies into
//! pages that are there already.
//!
//! Why: a buffered write to one file runs on one thread (the file system
//! holds the file's lock for it), and where putting a page into the page
//! cache is what costs (on the 2-core VM the benchmarks run on, a page of
//! memory the guest gave back to the host faults in again at about 11 µs:
//! 280 ms for 100 MiB), the other core can take half of it. Measured there,
//! the Python package's miss storing a 100 MiB array while another process
//! held the memory the guest still had (medians of 5, three runs each,
//! alternated): 128, 140 and 37 ms with this help, 270, 309 and 349 ms
//! without; when the guest had memory of its own, about 30 to 50 ms
//! either way, the help then having little left to do once the checksum
//! is computed.
//!
//! Only a hint: nothing is written through the map (no byte is ever
//! touched by this thread, so no `SIGBUS` can come from it), the pages are
//! faulted in by `madvise(MADV_POPULATE_WRITE)`, which reports an error
//! instead, and any error just ends the help. A page faulted in here holds
//! zeros (the file's hole) until the writer's copy lands in it; a page the
//! writer reached first is only found there. Either way the file's bytes
//! are the writer's.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

/// Files shorter than this are written without help: mapping one costs
/// more than the help saves.
const LEAST: u64 = 8 << 20;

/// The help faults in this many bytes at a time, from the end back.
const STEP: usize = 1 << 20;

/// It stops this far ahead of the writer, so that the two do not wait on
/// the same pages.
const MARGIN: u64 = 2 << 20;

/// A file being written, mapped for the help.
pub(super) struct Ahead {
    map: memmap2::MmapRaw,
    len: usize,
}

impl Ahead {
    /// For a new file that will hold `len` bytes, written from the start:
    /// sets its length and maps it, when it is large enough
    /// (see [`LEAST`]) and on a local file system whose holes read as
    /// zeros without any I/O (ext4, XFS, Btrfs, tmpfs: on a network file
    /// system, faulting in a page not yet written would read it from the
    /// server). `None`: no help.
    pub(super) fn new(file: &File, len: u64) -> Option<Ahead> {
        if len < LEAST || !holes_are_local(file) {
            return None;
        }
        // Mapping past the end is not allowed: the length first (no
        // space is allocated: the file is sparse until written).
        file.set_len(len).ok()?;
        let len = usize::try_from(len).ok()?;
        let map = memmap2::MmapOptions::new().len(len).map_raw(file).ok()?;
        Some(Ahead { map, len })
    }

    /// Faults in the pages from the end back, [`STEP`] bytes at a time,
    /// until they come within [`MARGIN`] of `written` (the writer's
    /// progress: the file's bytes before it are written; `u64::MAX` once
    /// the writer is done or failed).
    pub(super) fn fill(&self, written: &AtomicU64) {
        let mut high = self.len;
        while high > 0 {
            // The multiple of STEP below `high` (offsets in the map are
            // offsets in the file: it is mapped from 0).
            let low = (high - 1) / STEP * STEP;
            let near = written.load(Ordering::Relaxed).saturating_add(MARGIN);
            if (low as u64) < near {
                return;
            }
            let populate = memmap2::Advice::PopulateWrite;
            if self.map.advise_range(populate, low, high - low).is_err() {
                return;
            }
            high = low;
        }
    }
}

/// Is `file` on a local file system whose holes read as zeros without
/// I/O?
fn holes_are_local(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `file` is an open descriptor and `stat` is writable memory
    // of the size fstatfs fills.
    if unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so it filled `stat`.
    let kind = unsafe { stat.assume_init() }.f_type;
    // The magic numbers' C types differ between targets: compared as the
    // 32-bit values they are.
    [
        libc::EXT4_SUPER_MAGIC as u32,
        libc::XFS_SUPER_MAGIC as u32,
        libc::BTRFS_SUPER_MAGIC as u32,
        libc::TMPFS_MAGIC as u32,
    ]
    .contains(&(kind as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_help_stops_near_the_writer_and_leaves_the_writers_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = tempfile::tempfile_in(dir.path()).unwrap();
        let len = LEAST + 12345;
        let Some(ahead) = Ahead::new(&file, len) else {
            // Not a file system the help is for (the test's folder may be
            // on another one): nothing to check here.
            assert!(!holes_are_local(&file));
            return;
        };
        assert_eq!(file.metadata().unwrap().len(), len, "its length is set");
        // The writer has written the first 3 MiB.
        let first: Vec<u8> = (0..3 << 20).map(|i| (i % 253) as u8).collect();
        file.write_all_at(&first, 0).unwrap();
        let written = AtomicU64::new(first.len() as u64);
        ahead.fill(&written);
        // The last page and one in the middle are in the page cache now.
        for at in [len as usize - 1, len as usize / 2] {
            assert!(resident(&ahead, at), "the page of byte {at} was faulted in");
        }
        // The rest reads as zeros (the hole, faulted in), the start as the
        // writer wrote it; then the writer's bytes land over the zeros.
        let mut all = vec![1u8; len as usize];
        file.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(&all[..first.len()], &first[..]);
        assert!(all[first.len()..].iter().all(|&b| b == 0));
        let rest: Vec<u8> = (0..len as usize - first.len())
            .map(|i| (i % 241) as u8)
            .collect();
        file.write_all_at(&rest, first.len() as u64).unwrap();
        drop(ahead);
        file.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all, [first, rest].concat());
    }

    /// Is the page of byte `at` of the mapped file in the page cache?
    fn resident(ahead: &Ahead, at: usize) -> bool {
        let page = 4096;
        let start = at / page * page;
        let mut vec = [0u8; 1];
        // SAFETY: the range is one page inside the map (mapped from a
        // page-aligned address), and `vec` holds the one byte mincore
        // writes for it.
        let rc = unsafe {
            libc::mincore(
                ahead.map.as_mut_ptr().add(start).cast(),
                1,
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        vec[0] & 1 == 1
    }

    #[test]
    fn a_finished_writer_stops_the_help_and_small_files_get_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = tempfile::tempfile_in(dir.path()).unwrap();
        assert!(Ahead::new(&file, LEAST - 1).is_none());
        assert_eq!(file.metadata().unwrap().len(), 0, "left as it was");
        if let Some(ahead) = Ahead::new(&file, LEAST) {
            // Done already: nothing is faulted in, and it returns.
            ahead.fill(&AtomicU64::new(u64::MAX));
        }
    }
}
