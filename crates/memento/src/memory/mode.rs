//! What the next cached call on a thread is asked to do: the handle
//! structs (`f::call_forced`, `f::call_with_outcome`, `f::call_and_shelve`)
//! set it before they call `f`, and the call takes it. Per thread, so
//! that the function keeps its exact signature.

use std::cell::{Cell, RefCell};

use crate::key::Key;
use crate::Why;

/// What the next cached call on a thread is asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mode {
    /// Skip the lookup, compute and overwrite.
    pub(crate) force: bool,
    /// Report hit or miss and the key to `last_call`.
    record: bool,
}

thread_local! {
    static NEXT: Cell<Mode> = const { Cell::new(Mode { force: false, record: false }) };
    static LAST: Cell<Option<(bool, Option<Key>)>> = const { Cell::new(None) };
    static WHY: RefCell<Option<Why>> = const { RefCell::new(None) };
}

impl Mode {
    /// The mode of this call; later (nested) calls are normal again.
    #[inline]
    pub(crate) fn take() -> Mode {
        NEXT.with(|next| next.replace(Mode::default()))
    }

    /// This mode, reporting nothing (for work done on another thread: the
    /// caller reports on its own).
    #[inline]
    pub(crate) fn quiet(self) -> Mode {
        Mode {
            record: false,
            ..self
        }
    }

    #[inline]
    pub(crate) fn record(&self, hit: bool, key: Option<Key>) {
        if self.record {
            LAST.with(|last| last.set(Some((hit, key))));
        }
    }

    /// Does this call report to `last_call` and `last_why`?
    #[inline]
    pub(crate) fn records(&self) -> bool {
        self.record
    }

    /// Reports why the call missed to `last_why` (a miss only).
    #[inline]
    pub(crate) fn record_why(&self, why: Option<Why>) {
        if self.record {
            WHY.with(|last| *last.borrow_mut() = why);
        }
    }
}

/// Sets what the next cached call on this thread does. Used by the handle
/// modules.
#[doc(hidden)]
pub fn next_call(force: bool, record: bool) {
    NEXT.with(|next| next.set(Mode { force, record }));
    LAST.with(|last| last.set(None));
    WHY.with(|last| last.borrow_mut().take());
}

/// Whether the last recorded call was a hit, and its key.
#[doc(hidden)]
pub fn last_call() -> Option<(bool, Option<Key>)> {
    LAST.with(Cell::take)
}

/// Why the last recorded call missed (`None` after a hit).
#[doc(hidden)]
pub fn last_why() -> Option<Why> {
    WHY.with(|last| last.borrow_mut().take())
}
