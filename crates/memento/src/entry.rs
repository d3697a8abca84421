//! Entry metadata: the `metadata.json` written beside each `output.bin`, for
//! people browsing the cache and for the management tools. Reading a result
//! never needs it: `output.bin` carries its own key and checksum.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::codec::ENTRY_FORMAT_VERSION;

/// Longest argument text kept in `metadata.json`.
pub const ARGS_TEXT_LIMIT: usize = 1024;

/// The contents of an entry's `metadata.json`.
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
    /// Size of `output.bin` in bytes.
    pub output_size: u64,
    /// The arguments as JSON text (an array in argument order, ignored ones
    /// left out), cut at 1 KiB: for people, never read back.
    pub args: String,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-25T17:06:36.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The arguments as JSON, cut at [`ARGS_TEXT_LIMIT`] bytes. Serialization
/// stops as soon as the limit is reached, so a huge argument costs nothing.
pub(crate) fn args_text<A: Serialize + ?Sized>(args: &A) -> String {
    struct Limited(Vec<u8>);
    impl io::Write for Limited {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = ARGS_TEXT_LIMIT + 4 - self.0.len();
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
    let mut out = Limited(Vec::new());
    let complete = serde_json::to_writer(&mut out, args).is_ok();
    let mut text = String::from_utf8_lossy(&out.0).into_owned();
    if !complete && text.is_empty() {
        return "<arguments not printable as JSON>".to_string();
    }
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

/// Builds the metadata of a new entry.
pub(crate) fn new_metadata(
    function: &str,
    key: String,
    created: SystemTime,
    duration: Duration,
    output_size: u64,
    args: String,
) -> Metadata {
    let now = created;
    Metadata {
        format: ENTRY_FORMAT_VERSION,
        function: function.to_string(),
        key,
        created: rfc3339(now),
        created_unix: unix_seconds(now),
        duration: duration.as_secs_f64(),
        output_size,
        args,
    }
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
