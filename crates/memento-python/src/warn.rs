//! memento's warnings during a call, as Python warnings.
//!
//! memento reports a damaged entry ("it is removed and recomputed"), a full
//! disk and the like through `tracing`, or on stderr when no subscriber is
//! set. A Python program expects `warnings.warn` (joblib warns so on a
//! corrupt result): while a call reads and writes the store, this
//! thread's subscriber collects memento's warnings and errors, and the
//! caller turns each into a `UserWarning`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::LazyLock;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

thread_local! {
    static COLLECTED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// One dispatcher for the life of the process (making one per call would
/// rebuild tracing's callsite registry each time).
static DISPATCH: LazyLock<Dispatch> = LazyLock::new(|| Dispatch::new(Collector));

struct Collector;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl Subscriber for Collector {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::WARN)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        COLLECTED.with(|c| c.borrow_mut().push(message.0));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Runs `f` with memento's warnings collected; returns its value and them.
pub(crate) fn collecting<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let value = tracing::dispatcher::with_default(&DISPATCH, f);
    let warnings = COLLECTED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    (value, warnings)
}
