//! Warnings people see.
//!
//! memento reports through `tracing`, so a program with a subscriber gets
//! its warnings and info lines where it wants them. But a scientist's
//! program rarely installs one, and then `tracing` drops everything: "its
//! code changed; its 2 stored results are removed", "damaged entry", "disk
//! full" would vanish. joblib prints by default; so does memento: when no
//! subscriber is set, warnings and errors (and, with `MEMENTO_LOG=info`, the
//! info lines: each computation) go to stderr, one readable line each.
//! `MEMENTO_LOG=off` silences them. With a subscriber, they go to it only.

use std::sync::LazyLock;

/// Environment variable choosing what reaches stderr when no `tracing`
/// subscriber is set: `off`, `error`, `warn` (the default), `info`.
pub const MEMENTO_LOG: &str = "MEMENTO_LOG";

/// What reaches stderr without a subscriber.
static STDERR_LEVEL: LazyLock<Option<tracing::Level>> = LazyLock::new(|| {
    let value = std::env::var(MEMENTO_LOG).unwrap_or_default();
    match value.trim().to_ascii_lowercase().as_str() {
        "off" | "none" | "0" => None,
        "error" => Some(tracing::Level::ERROR),
        "info" => Some(tracing::Level::INFO),
        "debug" => Some(tracing::Level::DEBUG),
        "trace" => Some(tracing::Level::TRACE),
        _ => Some(tracing::Level::WARN),
    }
});

/// Is a `tracing` subscriber set for this thread (scoped or global)?
pub(crate) fn has_subscriber() -> bool {
    tracing::dispatcher::get_default(|d| !d.is::<tracing::subscriber::NoSubscriber>())
}

/// Would a debug line be seen (by the subscriber, or on stderr)? Asked
/// before work done only for such a line.
pub(crate) fn debug_enabled() -> bool {
    if has_subscriber() {
        tracing::enabled!(tracing::Level::DEBUG)
    } else {
        STDERR_LEVEL.is_some_and(|wanted| tracing::Level::DEBUG <= wanted)
    }
}

/// Writes one line to stderr, when `level` is wanted there.
#[doc(hidden)]
pub(crate) fn to_stderr(level: tracing::Level, message: std::fmt::Arguments<'_>) {
    if STDERR_LEVEL.is_some_and(|wanted| level <= wanted) {
        let label = match level {
            tracing::Level::ERROR => "error: ",
            tracing::Level::WARN => "warning: ",
            _ => "",
        };
        eprintln!("[memento] {label}{message}");
    }
}

/// `tracing::warn!` when a subscriber is set, else a line on stderr.
macro_rules! warning {
    ($($arg:tt)*) => {
        if $crate::log::has_subscriber() {
            tracing::warn!($($arg)*)
        } else {
            $crate::log::to_stderr(tracing::Level::WARN, format_args!($($arg)*))
        }
    };
}

/// `tracing::error!` when a subscriber is set, else a line on stderr.
macro_rules! error {
    ($($arg:tt)*) => {
        if $crate::log::has_subscriber() {
            tracing::error!($($arg)*)
        } else {
            $crate::log::to_stderr(tracing::Level::ERROR, format_args!($($arg)*))
        }
    };
}

/// `tracing::info!` when a subscriber is set, else a line on stderr with
/// `MEMENTO_LOG=info`.
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::has_subscriber() {
            tracing::info!($($arg)*)
        } else {
            $crate::log::to_stderr(tracing::Level::INFO, format_args!($($arg)*))
        }
    };
}

/// `tracing::debug!` when a subscriber is set, else a line on stderr with
/// `MEMENTO_LOG=debug`.
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::has_subscriber() {
            tracing::debug!($($arg)*)
        } else {
            $crate::log::to_stderr(tracing::Level::DEBUG, format_args!($($arg)*))
        }
    };
}

pub(crate) use {debug, error, info, warning};
