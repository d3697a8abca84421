//! Stale while revalidate (`refresh = "background"`): a call that finds its
//! result expired returns it at once, and the result is computed again on
//! a thread of its own, which replaces the entry when it is done.
//!
//! Why a thread per refresh and a count, not a pool: refreshes are rare
//! (one per expired key, once per expiry), each is a whole computation of
//! the function (seconds to hours), and a program must be able to wait for
//! them ([`Memory::wait_for_refreshes`], and at exit, so that a short
//! script does not lose the result it started). A refresh is the key's
//! turn to compute (`once.rs`), taken without waiting: when another thread
//! or process already holds it, the caller returns the expired value and
//! starts nothing. A refresh that fails (an `Err`, a panic) writes nothing,
//! so the expired result stays and is served; the failure is a warning,
//! once per key in a process.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::{Condvar, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::mode::Mode;
use super::once::Held;
use super::why::CallArgs;
use super::write::Pending;
use super::Memory;
use crate::function::{Function, Shape};
use crate::key::Key;

/// The answer of [`Memory::lookup_refreshing`] (an example there).
pub enum Refreshing<'m, T> {
    /// The stored result, not expired (or expired, with its refresh
    /// running elsewhere: in another thread or process).
    Hit(T),
    /// The stored result, expired: return it, and give the computation to
    /// [`Refresh::spawn`] (or [`Refresh::spawn_result`]), which runs it on
    /// a thread of its own and replaces the stored result with its value.
    Stale(T, Refresh<T>),
    /// Nothing usable is stored: compute, then hand the value to
    /// [`Pending::store`].
    Miss(Pending<'m, T>),
}

/// The turn to recompute an expired result, held by this call: give it
/// the computation with [`spawn`](Refresh::spawn) (examples there and at
/// [`Memory::lookup_refreshing`]). Dropping it unused gives the turn up (a
/// later call starts the refresh).
#[must_use = "call spawn() with the computation, or the result is not refreshed"]
pub struct Refresh<T> {
    /// Boxed: a `Refreshing` stays small on the hit path.
    parts: Box<Parts>,
    _output: PhantomData<fn() -> T>,
}

/// What the refresh's thread needs: the call (its Memory, function, key,
/// output shape and rendered arguments) and the turn held.
pub(super) struct Parts {
    pub(super) memory: Memory,
    pub(super) function: Function,
    pub(super) key: Key,
    pub(super) shape: Shape,
    pub(super) args: CallArgs,
    pub(super) held: Held,
}

impl<T> Refresh<T> {
    pub(super) fn new(parts: Parts) -> Refresh<T> {
        Refresh {
            parts: Box::new(parts),
            _output: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Refresh<T> {
    /// Runs `compute` on a thread of its own and replaces the stored
    /// result with its value. A panic in it leaves the stored result (a
    /// warning).
    ///
    /// ```
    /// use std::time::Duration;
    /// use memento::{Function, Memory, Refreshing};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = Memory::new(dir.path());
    /// let f = Function::new("docs", "catalogue").expires_after(Duration::from_nanos(1));
    /// let _: Vec<String> = memory.call(&f, &(), || vec!["old".into()]);
    /// if let Refreshing::Stale(old, refresh) = memory.lookup_refreshing::<Vec<String>, _>(&f, &()) {
    ///     assert_eq!(old, ["old"]);
    ///     refresh.spawn(|| vec!["new".into()]);
    /// }
    /// Memory::wait_for_refreshes();
    /// let lasting = f.clone().expires_after(Duration::from_secs(3600));
    /// assert!(memory.contains::<Vec<String>, _>(&lasting, &()));
    /// let now: Vec<String> = memory.call(&lasting, &(), || unreachable!());
    /// assert_eq!(now, ["new"]);
    /// ```
    pub fn spawn<F>(self, compute: F)
    where
        F: FnOnce() -> T + Send + 'static,
    {
        self.start(move || Some(compute()));
    }

    /// [`spawn`](Refresh::spawn) for a fallible computation: an `Ok`
    /// replaces the stored result; an `Err` leaves it (a warning).
    ///
    /// ```
    /// use std::time::Duration;
    /// use memento::{Function, Memory, Refreshing};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let memory = Memory::new(dir.path());
    /// let rate = Function::new("docs", "rate").expires_after(Duration::from_nanos(1));
    /// let fetch = |answer: Result<f64, String>| -> Result<f64, String> {
    ///     match memory.lookup_refreshing(&rate, "EUR") {
    ///         Refreshing::Hit(rate) => Ok(rate),
    ///         Refreshing::Stale(rate, refresh) => {
    ///             refresh.spawn_result(move || answer);
    ///             Ok(rate)
    ///         }
    ///         Refreshing::Miss(pending) => pending.store_result(answer),
    ///     }
    /// };
    /// assert_eq!(fetch(Ok(1.1)), Ok(1.1));
    /// assert_eq!(fetch(Err("the server is down".into())), Ok(1.1));
    /// Memory::wait_for_refreshes();
    /// // The failed refresh stored nothing: the old result is still there.
    /// assert_eq!(fetch(Ok(1.2)), Ok(1.1));
    /// Memory::wait_for_refreshes();
    /// assert_eq!(fetch(Ok(1.3)), Ok(1.2));
    /// # Memory::wait_for_refreshes();
    /// ```
    pub fn spawn_result<E, F>(self, compute: F)
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
    {
        self.start(move || compute().ok());
    }

    /// Starts the thread; `compute` gives `None` when it failed.
    fn start<F>(self, compute: F)
    where
        F: FnOnce() -> Option<T> + Send + 'static,
    {
        let Parts {
            memory,
            function,
            key,
            shape,
            args,
            held,
        } = *self.parts;
        crate::log::info!(
            "{}: result expired; served, and computed again in the background",
            function.full_name()
        );
        let parts = (memory, function, args, held);
        let run = move || {
            let (memory, function, args, held) = parts;
            let state = memory
                .records()
                .state(&function, shape, std::any::type_name::<T>());
            // A forced write: the new result replaces the expired one.
            let mut mode = Mode::default();
            mode.force = true;
            let pending = Pending::<T>::new(
                &memory,
                &function,
                Some(state),
                Some(key),
                shape,
                args,
                None,
                mode,
                held,
            );
            match std::panic::catch_unwind(AssertUnwindSafe(compute)) {
                Ok(Some(value)) => drop(pending.store(value)),
                Ok(None) => failed(&function, &key, "it returned an error"),
                Err(_) => failed(&function, &key, "it panicked"),
            }
        };
        RUNNING.begin();
        crate::exit::on_exit_first("refresh", wait_for_refreshes);
        let spawned = std::thread::Builder::new()
            .name("memento-refresh".into())
            .spawn(move || {
                let _end = End;
                run();
            });
        if let Err(e) = spawned {
            // The closure (and the turn it holds) is dropped: a later
            // call tries again.
            RUNNING.end();
            crate::log::warning!(
                "could not start a background refresh ({e}); the expired result is served"
            );
        }
    }
}

/// Says once per key (in this process) that a refresh failed.
fn failed(function: &Function, key: &Key, why: &str) {
    static SAID: Mutex<Option<HashSet<Key>>> = Mutex::new(None);
    let first = SAID
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(*key);
    if first {
        crate::log::warning!(
            "{}: the background refresh of an expired result failed ({why}); the stored \
             result is kept and served, and a later call tries again (further failures \
             of this call are not reported)",
            function.full_name()
        );
    }
}

/// The refreshes running in this process.
struct Running {
    count: Mutex<usize>,
    ended: Condvar,
}

static RUNNING: Running = Running {
    count: Mutex::new(0),
    ended: Condvar::new(),
};

impl Running {
    fn begin(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn end(&self) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *count -= 1;
        if *count == 0 {
            self.ended.notify_all();
        }
    }
}

/// Ends a refresh when its thread is done, a panic included.
struct End;

impl Drop for End {
    fn drop(&mut self) {
        RUNNING.end();
    }
}

/// Blocks until no background refresh runs in this process.
pub(super) fn wait_for_refreshes() {
    let mut count = RUNNING.count.lock().unwrap_or_else(|e| e.into_inner());
    while *count > 0 {
        count = RUNNING.ended.wait(count).unwrap_or_else(|e| e.into_inner());
    }
}
