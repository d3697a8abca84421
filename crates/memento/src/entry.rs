//! Entry metadata: the [`Info`] written at the end of each entry file (JSON,
//! after the payload; see [`codec`](crate::codec)), and the [`Metadata`] that
//! the management tools show, made of the entry's header and its info.
//! Reading a result never parses the info: it is only checksummed with the
//! rest.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The end of an entry file's name: `<function folder>/ab/<62 hex>.bin`
/// (see the store's layout).
pub use crate::layout::ENTRY_SUFFIX;

/// Longest argument text kept in an entry's info.
pub const ARGS_TEXT_LIMIT: usize = 1024;

/// What is known of a stored result: its header's fields and its [`Info`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Entry format version.
    pub format: u16,
    /// `module::name` of the function.
    pub function: String,
    /// The entry's key, hex.
    pub key: String,
    /// When the result was computed, RFC 3339 in UTC.
    pub created: String,
    /// The same instant in seconds since the Unix epoch.
    pub created_unix: f64,
    /// How long the computation took, in seconds.
    pub duration: f64,
    /// Size of the entry's file in bytes.
    pub output_size: u64,
    /// The arguments as JSON text (an array in argument order, ignored ones
    /// left out), cut at 1 KiB: for people, never read back.
    pub args: String,
}

/// The JSON at the end of an entry file, for people and tools (the rest of
/// [`Metadata`] is in the entry's header).
///
/// ```
/// let info = memento::entry::Info {
///     function: "demo::sine".into(),
///     duration: 1.5,
///     args: "[0.5]".into(),
/// };
/// let json = serde_json::to_string(&info).unwrap();
/// assert_eq!(json, r#"{"function":"demo::sine","duration":1.5,"args":"[0.5]"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// `module::name` of the function.
    pub function: String,
    /// How long the computation took, in seconds.
    pub duration: f64,
    /// The arguments as JSON text (an array in argument order, ignored ones
    /// left out), cut at 1 KiB: for people, never read back.
    pub args: String,
}

impl Metadata {
    /// Reads the metadata of the entry file `name` (two ranged reads: the
    /// header, then the info; the checksum is not checked). `Ok(None)` when
    /// there is no such file or it does not start with an entry header.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = memento::Memory::new(dir.path());
    /// let f = memento::Function::new("docs", "meta");
    /// let _: u32 = memory.call(&f, &(7u32,), || 49);
    /// let key = memory.key_of::<u32, _>(&f, &(7u32,)).unwrap();
    /// let entry = &memento::evict::Inventory::scan(memory.store()).unwrap().entries[0];
    /// let meta = memento::entry::Metadata::read(memory.store(), &entry.name).unwrap().unwrap();
    /// assert_eq!((meta.key, meta.args.as_str()), (key.to_hex(), "[7]"));
    /// ```
    pub fn read(store: &dyn crate::store::Store, name: &str) -> crate::Result<Option<Metadata>> {
        use crate::codec::Header;
        let mut head = Vec::new();
        if !store.read_range(name, 0..Header::LEN as u64, &mut head)? {
            return Ok(None);
        }
        let Ok(header) = Header::parse(&head) else {
            return Ok(None);
        };
        let range = header.info_range();
        let mut info = Vec::new();
        let found = store.read_range(name, range.clone(), &mut info)?;
        let info = (found && info.len() as u64 == range.end - range.start).then_some(&info[..]);
        Ok(Some(Metadata::of_header(&header, range.end, info, "")))
    }

    /// The metadata of an entry of `file_len` bytes whose header (at least)
    /// is `head` and whose info bytes are `info` (`None`: unknown, or not
    /// JSON of that shape: the function's name is then `function`, the
    /// duration zero and the arguments empty). Bytes that do not start with
    /// a header give format 0, no key and the epoch as creation time.
    ///
    /// ```
    /// let meta = memento::entry::Metadata::of_entry(b"", 0, None, "m::f");
    /// assert_eq!((meta.format, meta.function.as_str(), meta.key.as_str()), (0, "m::f", ""));
    /// ```
    pub fn of_entry(head: &[u8], file_len: u64, info: Option<&[u8]>, function: &str) -> Metadata {
        match crate::codec::Header::parse(head) {
            Ok(header) => Metadata::of_header(&header, file_len, info, function),
            Err(_) => Metadata::of_parts(0, 0, String::new(), file_len, info, function),
        }
    }

    /// [`of_entry`](Metadata::of_entry) for an entry whose header is parsed.
    pub fn of_header(
        header: &crate::codec::Header,
        file_len: u64,
        info: Option<&[u8]>,
        function: &str,
    ) -> Metadata {
        Metadata::of_parts(
            header.version(),
            header.created_ms(),
            header.key().to_hex(),
            file_len,
            info,
            function,
        )
    }

    fn of_parts(
        format: u16,
        created_ms: u64,
        key: String,
        file_len: u64,
        info: Option<&[u8]>,
        function: &str,
    ) -> Metadata {
        let info: Option<Info> = info.and_then(|b| serde_json::from_slice(b).ok());
        // A hostile time far in the future must not overflow `SystemTime`.
        let created = UNIX_EPOCH
            .checked_add(Duration::from_millis(created_ms))
            .unwrap_or(UNIX_EPOCH);
        let (function, duration, args) = match info {
            Some(i) => (i.function, i.duration, i.args),
            None => (function.to_string(), 0.0, String::new()),
        };
        Metadata {
            format,
            function,
            key,
            created: rfc3339(created),
            created_unix: unix_seconds(created),
            duration,
            output_size: file_len,
            args,
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-25T17:06:36.123Z`.
///
/// An instant RFC 3339 cannot write (before 1970 here, or after the year
/// 9999: a file's time set back, a damaged entry's header) is clamped to
/// the nearest one it can.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_795_194_396_123);
/// assert_eq!(memento::entry::rfc3339(t), "2026-11-20T17:06:36.123Z");
/// ```
pub fn rfc3339(t: SystemTime) -> String {
    // humantime writes four-digit years (and panics on a time before the
    // epoch): the last instant it can write.
    const LAST: Duration = Duration::from_millis(253_402_300_799_999);
    let since = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(LAST);
    humantime::format_rfc3339_millis(UNIX_EPOCH + since).to_string()
}

/// The arguments as JSON, cut at [`ARGS_TEXT_LIMIT`] bytes. Serialization
/// stops as soon as the limit is reached, so a huge argument costs nothing.
pub(crate) fn args_text<A: Serialize + ?Sized>(args: &A) -> String {
    let mut out = Vec::new();
    let complete = serde_json::to_writer(Room(&mut out, ARGS_TEXT_ROOM), args).is_ok();
    finish_args_text(out, complete)
}

/// The bytes [`args_text`] lets its writer take before it cuts.
pub(crate) const ARGS_TEXT_ROOM: usize = ARGS_TEXT_LIMIT + 4;

/// The arguments' text of what a [`Room`] of [`ARGS_TEXT_ROOM`] took:
/// cut at [`ARGS_TEXT_LIMIT`] bytes (on a character) and marked when
/// incomplete (`complete`: the serializer finished).
pub(crate) fn finish_args_text(bytes: Vec<u8>, complete: bool) -> String {
    if !complete && bytes.is_empty() {
        return "<arguments not printable as JSON>".to_string();
    }
    let mut text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    if !complete || text.len() > ARGS_TEXT_LIMIT {
        let mut cut = ARGS_TEXT_LIMIT.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Writes into a buffer up to its limit in bytes, then fails: a
/// serializer writing into it stops there, whatever the value's size.
pub(crate) struct Room<'a>(pub(crate) &'a mut Vec<u8>, pub(crate) usize);

impl io::Write for Room<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.1.saturating_sub(self.0.len());
        if room == 0 {
            return Err(io::Error::other("limit"));
        }
        let n = buf.len().min(room);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The info of a new entry, as JSON.
pub(crate) fn new_info(function: &str, duration: Duration, args: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct InfoRef<'a> {
        function: &'a str,
        duration: f64,
        args: &'a str,
    }
    serde_json::to_vec(&InfoRef {
        function,
        duration: duration.as_secs_f64(),
        args,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_194_396_123);
        assert_eq!(rfc3339(t), "2026-11-20T17:06:36.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    /// A hostile or damaged entry may say it was made in any millisecond
    /// up to `u64::MAX`, and a file's last access may be set before 1970:
    /// the text is RFC 3339 still (four-digit years, as the standard asks),
    /// clamped to what it can say, and never a panic.
    #[test]
    fn rfc3339_out_of_range_instants_are_clamped() {
        let far = UNIX_EPOCH + Duration::from_millis(u64::MAX);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999Z");
        let ten_thousand = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(rfc3339(ten_thousand), "9999-12-31T23:59:59.999Z");
        if let Some(before) = UNIX_EPOCH.checked_sub(Duration::from_secs(86_400)) {
            assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000Z");
        }
        for t in [
            UNIX_EPOCH,
            far,
            UNIX_EPOCH + Duration::from_millis(1_795_194_396_123),
        ] {
            let text = rfc3339(t);
            assert!(humantime::parse_rfc3339(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn metadata_of_an_entry() {
        let key = crate::Key::of(&1u8).unwrap();
        let info = new_info("m::f", Duration::from_millis(1500), "[1]");
        let entry = crate::codec::seal_with_info(&key, &[1], &info, 1_795_194_396_123, None);
        let meta = Metadata::of_entry(&entry, entry.len() as u64, crate::codec::info(&entry), "?");
        assert_eq!(meta.function, "m::f");
        assert_eq!(meta.key, key.to_hex());
        assert_eq!(meta.created, "2026-11-20T17:06:36.123Z");
        assert_eq!((meta.duration, meta.args.as_str()), (1.5, "[1]"));
        assert_eq!(meta.output_size, entry.len() as u64);
        assert_eq!(meta.format, crate::codec::ENTRY_FORMAT_VERSION);
        let bare = Metadata::of_entry(&entry, 9, None, "m::g");
        assert_eq!((bare.function.as_str(), bare.duration), ("m::g", 0.0));
    }

    #[test]
    fn args_text_is_cut() {
        assert_eq!(args_text(&(0.1f64, "a")), r#"[0.1,"a"]"#);
        let long = vec![7u8; 10_000];
        let text = args_text(&(&long,));
        assert!(text.ends_with('…'));
        assert!(text.len() <= ARGS_TEXT_LIMIT + '…'.len_utf8());
        let wide = "é".repeat(2000);
        let text = args_text(&wide);
        assert!(text.len() <= ARGS_TEXT_LIMIT + '…'.len_utf8());
    }
}
