//! The store's layout: the names of the objects memento keeps, built and
//! parsed here and nowhere else (cacache's `content/path.rs` is the model).
//! A name is `/`-separated and relative to the location.
//!
//! ```text
//! <location>/
//!   .gitignore                      "*"
//!   .index/                         the eviction index (index.rs)
//!     <kind>-<pid>-<ms>-<n>.log     a log of records (index::Record)
//!     complete                      every result has a record
//!   .access/                        last accesses, in a bucket (store/s3.rs)
//!     <host>-<pid>-<nonce>.json     one flush of one process's accesses
//!   <fn folder>/                    crate/module/name (Function::folder)
//!     function.json                 the function's record
//!     function.lock                 serializes changes of the record
//!     hits.json                     hit counts
//!     calls.json                    recent stored calls and misses (why.rs)
//!     ab/                           shard: the key's first two hex digits
//!       <62 hex>.bin                an entry: header, payload, info
//!       .keys                       per-key byte-range locks (Linux)
//!       <62 hex>.lock               a key's lock file (elsewhere)
//!       .tmp-*                      a file being written
//! ```
//!
//! Entry format 1 kept each entry in a folder of its own,
//! `<fn folder>/ab/<62 hex>/{output.bin, metadata.json}`;
//! [`parse`] still tells such files, so that they are removed.

use crate::key::Key;

/// The file name ending of an entry.
pub const ENTRY_SUFFIX: &str = ".bin";
/// The file name ending of a key's lock file.
pub(crate) const KEY_LOCK_SUFFIX: &str = ".lock";
/// The function's record, in its folder.
pub(crate) const RECORD: &str = "function.json";
/// The lock serializing changes of the record, in the function's folder.
pub(crate) const RECORD_LOCK: &str = "function.lock";
/// The function's hit counts, in its folder.
pub(crate) const HITS: &str = "hits.json";
/// The function's recent stored calls and misses, in its folder.
pub(crate) const CALLS: &str = "calls.json";
/// The per-key byte-range locks of a shard folder.
pub(crate) const SHARD_LOCKS: &str = ".keys";
/// The start of a temporary file's name.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";
/// The eviction index's folder, at the top of the location.
pub(crate) const INDEX_DIR: &str = ".index";
/// The extension of the index's logs, in [`INDEX_DIR`].
pub(crate) const INDEX_LOG_EXTENSION: &str = "log";
/// The mark of a complete index, in [`INDEX_DIR`].
pub(crate) const INDEX_COMPLETE: &str = "complete";
/// The folder of a bucket's access records, at the top of the location: S3
/// keeps no access time, so an `S3Store` writes the last accesses of the
/// entries it served there, one object per flush.
pub(crate) const ACCESS_DIR: &str = ".access";
/// The file name ending of an access record, in [`ACCESS_DIR`].
// Used by the S3 store (and the tests).
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
const ACCESS_SUFFIX: &str = ".json";
/// The file that keeps a location out of git, at its top.
pub(crate) const GITIGNORE: &str = ".gitignore";
/// Hex digits of a key that name its shard folder.
const SHARD_HEX: usize = 2;
/// Hex digits of a key that name its file in the shard.
const FILE_HEX: usize = 62;

/// Is the file name (not a path) `file` that of a lock file: a key's
/// (`<62 hex>.lock`) or a function's record's (`function.lock`)?
pub(crate) fn is_lock_file(file: &str) -> bool {
    file.ends_with(KEY_LOCK_SUFFIX)
}

/// Is the file name (not a path) `file` that of a temporary file?
pub(crate) fn is_temp_file(file: &str) -> bool {
    file.starts_with(TEMP_PREFIX)
}

/// `<folder>/function.json`.
pub(crate) fn record(folder: &str) -> String {
    format!("{folder}/{RECORD}")
}

/// `<folder>/function.lock`.
pub(crate) fn record_lock(folder: &str) -> String {
    format!("{folder}/{RECORD_LOCK}")
}

/// `<folder>/hits.json`.
pub(crate) fn hits(folder: &str) -> String {
    format!("{folder}/{HITS}")
}

/// `<folder>/calls.json`.
pub(crate) fn calls(folder: &str) -> String {
    format!("{folder}/{CALLS}")
}

/// `.access/<host>-<pid>-<nonce>.json`: an access record written by the
/// process `holder` (`host:pid`, any text: what is not a letter, a digit,
/// `.` or `-` becomes `_`); `nonce` tells its flushes apart.
// Used by the S3 store (and the tests).
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) fn access_record(holder: &str, nonce: &str) -> String {
    let safe = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let holder = safe(&holder.replace(':', "-"));
    format!("{ACCESS_DIR}/{holder}-{}{ACCESS_SUFFIX}", safe(nonce))
}

/// Is `name` in the access records' folder ([`ACCESS_DIR`])?
pub(crate) fn is_access_record(name: &str) -> bool {
    name.strip_prefix(ACCESS_DIR)
        .is_some_and(|after| after.starts_with('/'))
}

/// Is `name` an entry (`<folder>/ab/<62 hex>.bin`)?
// Used by the S3 store (and the tests).
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) fn is_entry(name: &str) -> bool {
    matches!(parse(name), Name::Entry { .. })
}

/// The entry file of `key` in `folder`, as an owned string.
pub(crate) fn entry_file(folder: &str, key: &Key) -> String {
    EntryName::entry(folder, key).as_str().to_string()
}

/// What an object of the store is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Name<'a> {
    /// An entry: `<folder>/ab/<62 hex>.bin`.
    Entry { folder: &'a str, key: Key },
    /// A key's lock file: `<folder>/ab/<62 hex>.lock`.
    KeyLock { folder: &'a str, key: Key },
    /// A shard's byte-range locks: `<folder>/ab/.keys`.
    ShardLocks { folder: &'a str },
    /// A function's record.
    Record { folder: &'a str },
    /// The lock of a function's record.
    RecordLock { folder: &'a str },
    /// A function's hit counts.
    Hits { folder: &'a str },
    /// A function's recent stored calls and misses.
    Calls { folder: &'a str },
    /// A file of an entry folder of entry format 1:
    /// `<folder>/ab/<62 hex>/<file>`; `dir` is the entry folder.
    OldEntry {
        folder: &'a str,
        dir: &'a str,
        key: Key,
    },
    /// A file being written (or left by a killed writer).
    Temp,
    /// Anything in the access records' folder (`.access/…`): records
    /// written by [`access_record`], or strays there.
    AccessRecord,
    /// Anything else (`.gitignore`, the index, a stray file).
    Other,
}

/// Tells what the object `name` is.
pub(crate) fn parse(name: &str) -> Name<'_> {
    let Some((rest, file)) = name.rsplit_once('/') else {
        return Name::Other;
    };
    if is_access_record(name) {
        return Name::AccessRecord;
    }
    if file.starts_with(TEMP_PREFIX) {
        return Name::Temp;
    }
    match file {
        RECORD => return Name::Record { folder: rest },
        RECORD_LOCK => return Name::RecordLock { folder: rest },
        HITS => return Name::Hits { folder: rest },
        CALLS => return Name::Calls { folder: rest },
        _ => {}
    }
    let shard_split = rest.rsplit_once('/');
    if let Some((folder, shard)) = shard_split.filter(|(_, shard)| hex(shard, SHARD_HEX)) {
        if file == SHARD_LOCKS {
            return Name::ShardLocks { folder };
        }
        if let Some(key) = file
            .strip_suffix(ENTRY_SUFFIX)
            .and_then(|rest_hex| key_of(shard, rest_hex))
        {
            return Name::Entry { folder, key };
        }
        if let Some(key) = file
            .strip_suffix(KEY_LOCK_SUFFIX)
            .and_then(|rest_hex| key_of(shard, rest_hex))
        {
            return Name::KeyLock { folder, key };
        }
    }
    // Entry format 1: <folder>/ab/<62 hex>/<file>.
    if let Some((above, entry)) = rest.rsplit_once('/') {
        if let Some((folder, shard)) = above.rsplit_once('/') {
            if let Some(key) = key_of(shard, entry) {
                return Name::OldEntry {
                    folder,
                    dir: rest,
                    key,
                };
            }
        }
    }
    Name::Other
}

/// The shard folder (`<folder>/ab`) that holds `name`: an entry file, a
/// key's lock file, or an entry folder of entry format 1 (what
/// `EntryInfo::name` holds); `None` when `name` is not in a shard folder.
pub(crate) fn shard_of(name: &str) -> Option<&str> {
    let (shard, file) = name.rsplit_once('/')?;
    let (_, digits) = shard.rsplit_once('/')?;
    let rest = [ENTRY_SUFFIX, KEY_LOCK_SUFFIX]
        .into_iter()
        .find_map(|suffix| file.strip_suffix(suffix))
        .unwrap_or(file);
    (hex(digits, SHARD_HEX) && hex(rest, FILE_HEX)).then_some(shard)
}

/// The byte of the shard's `.keys` file that stands for a key's lock
/// (`<folder>/ab/<62 hex>.lock`): the first 15 of its 62 hex digits (60
/// bits; with the shard's 8, two keys share a byte once in 2^68).
pub(crate) fn key_lock_offset(name: &str) -> Option<i64> {
    let file = name.rsplit('/').next()?;
    let hex_name = file.strip_suffix(KEY_LOCK_SUFFIX)?;
    if !hex(hex_name, FILE_HEX) {
        return None;
    }
    i64::from_str_radix(hex_name.get(..15)?, 16).ok()
}

fn hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn key_of(shard: &str, file: &str) -> Option<Key> {
    if !hex(shard, SHARD_HEX) || !hex(file, FILE_HEX) {
        return None;
    }
    let mut full = [0u8; 64];
    full[..SHARD_HEX].copy_from_slice(shard.as_bytes());
    full[SHARD_HEX..].copy_from_slice(file.as_bytes());
    Key::from_hex(std::str::from_utf8(&full).ok()?)
}

/// `folder/ab/<62 hex><suffix>` (the entry file with [`ENTRY_SUFFIX`],
/// its lock with `.lock`), built without allocating when short.
pub(crate) struct EntryName {
    buf: [u8; 320],
    len: usize,
    heap: Option<String>,
}

impl EntryName {
    #[inline]
    fn new(folder: &str, key: &Key, suffix: &str) -> EntryName {
        let hex = key.hex();
        let hex = hex.as_bytes();
        let parts: [&[u8]; 6] = [
            folder.as_bytes(),
            b"/",
            &hex[..2],
            b"/",
            &hex[2..],
            suffix.as_bytes(),
        ];
        let total: usize = parts.iter().map(|p| p.len()).sum::<usize>();
        let mut name = EntryName {
            buf: [0; 320],
            len: 0,
            heap: None,
        };
        if total > name.buf.len() {
            let mut s = String::with_capacity(total);
            for p in parts {
                s.push_str(std::str::from_utf8(p).unwrap_or_default());
            }
            name.heap = Some(s);
            return name;
        }
        for p in parts {
            name.buf[name.len..name.len + p.len()].copy_from_slice(p);
            name.len += p.len();
        }
        name
    }

    /// The entry file of `key`.
    #[inline]
    pub(crate) fn entry(folder: &str, key: &Key) -> EntryName {
        EntryName::new(folder, key, ENTRY_SUFFIX)
    }

    /// The lock file of `key` (or, on Linux, the name whose byte of the
    /// shard's `.keys` is the key's lock: see [`key_lock_offset`]).
    #[inline]
    pub(crate) fn key_lock(folder: &str, key: &Key) -> EntryName {
        EntryName::new(folder, key, KEY_LOCK_SUFFIX)
    }

    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        match &self.heap {
            Some(s) => s,
            // Built from `&str`s and ASCII hex.
            None => std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        let key = Key::of(&1u8).unwrap();
        let hex = key.to_hex();
        let n = EntryName::entry("c/m/f", &key);
        assert_eq!(n.as_str(), format!("c/m/f/{}/{}.bin", &hex[..2], &hex[2..]));
        assert_eq!(entry_file("c/m/f", &key), n.as_str());
        let n = EntryName::key_lock("c/m/f", &key);
        assert_eq!(
            n.as_str(),
            format!("c/m/f/{}/{}.lock", &hex[..2], &hex[2..])
        );
        let long = "x".repeat(400);
        let n = EntryName::entry(&long, &key);
        assert!(
            n.as_str().starts_with(&long) && n.as_str().ends_with(&format!("/{}.bin", &hex[2..]))
        );
    }

    #[test]
    fn every_name_parses_back() {
        let key = Key::of(&"k").unwrap();
        let hex = key.to_hex();
        let folder = "c/m/f";
        assert_eq!(
            parse(EntryName::entry(folder, &key).as_str()),
            Name::Entry { folder, key }
        );
        assert_eq!(
            parse(EntryName::key_lock(folder, &key).as_str()),
            Name::KeyLock { folder, key }
        );
        assert_eq!(parse(&record(folder)), Name::Record { folder });
        assert_eq!(parse(&record_lock(folder)), Name::RecordLock { folder });
        assert_eq!(parse(&hits(folder)), Name::Hits { folder });
        assert_eq!(parse(&calls(folder)), Name::Calls { folder });
        assert_eq!(
            parse(&format!("{folder}/{}/{SHARD_LOCKS}", &hex[..2])),
            Name::ShardLocks { folder }
        );
        let old_dir = format!("{folder}/{}/{}", &hex[..2], &hex[2..]);
        assert_eq!(
            parse(&format!("{old_dir}/output.bin")),
            Name::OldEntry {
                folder,
                dir: &old_dir,
                key
            }
        );
        assert_eq!(parse(&format!("{folder}/ab/{TEMP_PREFIX}x1")), Name::Temp);
        assert_eq!(parse(GITIGNORE), Name::Other);
        // The walks that remove unheld locks and old temporary files tell
        // them by file name alone.
        let lock = EntryName::key_lock(folder, &key);
        assert!(is_lock_file(lock.as_str().rsplit('/').next().unwrap()));
        assert!(is_lock_file(RECORD_LOCK));
        assert!(!is_lock_file(RECORD) && !is_lock_file(HITS) && !is_lock_file(SHARD_LOCKS));
        assert!(is_temp_file(".tmp-x1") && !is_temp_file(RECORD));
        assert_eq!(parse("m/f/zz/notakey.bin"), Name::Other);
        let record = access_record("my-host.lan:42", "00ff");
        assert_eq!(record, ".access/my-host.lan-42-00ff.json");
        assert_eq!(parse(&record), Name::AccessRecord);
        assert_eq!(
            parse(&access_record("we/ird host:1", "a/b")),
            Name::AccessRecord
        );
        assert_eq!(
            access_record("we/ird host:1", "a/b").matches('/').count(),
            1
        );
        assert_eq!(parse(".access/anything/else"), Name::AccessRecord);
        assert_eq!(parse(".accessory/x.json"), Name::Other);
        assert_eq!(parse("f/.access/x.json"), Name::Other);
        assert!(is_entry(EntryName::entry(folder, &key).as_str()));
        assert!(!is_entry(&record) && !is_entry(&hits(folder)) && !is_entry("a/b.bin"));
        assert_eq!(parse("m/f/ab/abc.bin"), Name::Other);
    }

    #[test]
    fn shards_of_names() {
        let key = Key::of(&"k").unwrap();
        let hex = key.to_hex();
        let shard = format!("c/m/f/{}", &hex[..2]);
        let entry = EntryName::entry("c/m/f", &key);
        assert_eq!(shard_of(entry.as_str()), Some(shard.as_str()));
        let lock = EntryName::key_lock("c/m/f", &key);
        assert_eq!(shard_of(lock.as_str()), Some(shard.as_str()));
        let old_dir = format!("{shard}/{}", &hex[2..]);
        assert_eq!(shard_of(&old_dir), Some(shard.as_str()));
        assert_eq!(shard_of(&record("c/m/f")), None);
        assert_eq!(shard_of("f.bin"), None);
        // A function whose folder looks like a shard has no shard.
        assert_eq!(shard_of(&record("c/m/ab")), None);
        assert_eq!(shard_of(&format!("c/m/ab/{}.json", &hex[2..])), None);
    }

    #[test]
    fn key_lock_offsets() {
        let key = Key::of(&"k").unwrap();
        let hex = key.to_hex();
        let lock = EntryName::key_lock("f", &key);
        assert_eq!(
            key_lock_offset(lock.as_str()),
            Some(i64::from_str_radix(&hex[2..17], 16).unwrap())
        );
        assert_eq!(key_lock_offset(EntryName::entry("f", &key).as_str()), None);
        assert_eq!(key_lock_offset("f/ab/short.lock"), None);
        let high = format!("f/ab/fffffffffffffff0{}.lock", "0".repeat(46));
        assert_eq!(key_lock_offset(&high), Some(0x0fff_ffff_ffff_ffff));
        assert_eq!(key_lock_offset("f/function.lock"), None);
    }
}
