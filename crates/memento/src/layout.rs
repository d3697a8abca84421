//! The store's layout: the names of the objects memento keeps, built and
//! parsed here and nowhere else.
//!
//! ```text
//! <location>/
//!   .gitignore                      "*"
//!   <fn folder>/                    crate/module/name, see Function::folder
//!     function.json                 the function's record
//!     function.lock                 serializes changes of the record
//!     hits.json                     hit counts
//!     ab/                           shard: the key's first two hex digits
//!       <62 hex>.bin                an entry: header, payload, info
//!       .keys                       per-key byte-range locks (Linux)
//!       <62 hex>.lock               a key's lock file (elsewhere)
//! ```

use crate::entry::ENTRY_SUFFIX;
use crate::key::Key;

/// `folder/ab/<62 hex><suffix>` (the entry file with [`ENTRY_SUFFIX`],
/// its lock with `.lock`), built without allocating when short.
pub(crate) struct EntryName {
    buf: [u8; 320],
    len: usize,
    heap: Option<String>,
}

impl EntryName {
    #[inline]
    pub(crate) fn new(folder: &str, key: &Key, suffix: &str) -> EntryName {
        let mut hex = [0u8; 64];
        key.write_hex(&mut hex);
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
        let n = EntryName::new("c/m/f", &key, ".lock");
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
}
