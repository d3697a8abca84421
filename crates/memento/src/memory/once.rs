//! Compute once: a call that finds nothing stored takes its turn. Within
//! the process, calls of one key join a flight (the first leads, the others
//! wait on a condition variable); across processes, the leader takes the
//! key's lock file in the store. After each wait the call looks again. The
//! waits are plain blocking calls ([`Wait::block`]), run in place by
//! `Memory::lookup` and on a thread of their own by `Memory::lookup_async`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::Mode;
use super::{trim_brackets, EntryName, FnState, Lookup, Memory, Shared};
use crate::error::Result;
use crate::function::{Function, Shape};
use crate::key::Key;
use crate::store::{LockOutcome, Store, StoreLock};

/// One computation in flight in this process.
#[derive(Default)]
pub(super) struct Flight {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Flight {
    /// Waits until the computation ends; false if `timeout` passed first.
    pub(super) fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            match deadline {
                None => done = self.cv.wait(done).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    done = self
                        .cv
                        .wait_timeout(done, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        true
    }
}

/// The leader of a computation in this process: when it drops (the result
/// stored, or the computation failed or panicked), the waiters wake up.
pub(super) struct Leader {
    shared: Arc<Shared>,
    key: Key,
    flight: Arc<Flight>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.shared
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        *self.flight.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.flight.cv.notify_all();
    }
}

impl Memory {
    /// Becomes the leader of `key`'s computation in this process (every
    /// Memory over this location shares the flights), or gets the running
    /// one to wait for.
    pub(super) fn lead_or_follow(&self, key: &Key) -> std::result::Result<Leader, Arc<Flight>> {
        let mut inflight = self
            .inner
            .shared
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = inflight.get(key) {
            return Err(flight.clone());
        }
        let flight = Arc::new(Flight::default());
        inflight.insert(*key, flight.clone());
        Ok(Leader {
            shared: self.inner.shared.clone(),
            key: *key,
            flight,
        })
    }
}

/// The first, non-waiting part of a lookup.
pub(super) enum Begun<'m, T> {
    Done(Lookup<'m, T>),
    Contended(Contended),
}

/// A lookup that found nothing and must take its turn to compute.
pub(super) struct Contended {
    pub(super) state: Arc<FnState>,
    pub(super) key: Key,
    pub(super) shape: Shape,
    pub(super) args: String,
    pub(super) mode: Mode,
    pub(super) leader: Option<Leader>,
    pub(super) lock: Option<StoreLock>,
    pub(super) phase: Phase,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Join this process's flight for the key.
    Flight,
    /// Waited for another thread's flight.
    FlightWaited,
    /// Waited for the key's lock across processes.
    LockWaited,
}

/// What a contended lookup waits for next: blocking work, run in place
/// (sync) or on a thread of its own (async).
pub(super) enum Wait {
    Flight(Arc<Flight>, Option<Duration>),
    Lock(Arc<dyn Store>, String, Option<Duration>),
}

pub(super) enum Waited {
    Flight(bool),
    Lock(Result<LockOutcome>),
}

impl Wait {
    pub(super) fn block(self) -> Waited {
        match self {
            Wait::Flight(flight, timeout) => Waited::Flight(flight.wait(timeout)),
            Wait::Lock(store, name, timeout) => Waited::Lock(store.lock(&name, timeout)),
        }
    }
}

pub(super) enum Step<'m, T> {
    Done(Lookup<'m, T>),
    Wait(Wait),
}

impl Contended {
    /// One step of taking the turn to compute; `waited` is the answer to the
    /// last `Step::Wait`.
    pub(super) fn step<'m, T: DeserializeOwned + 'static>(
        &mut self,
        memory: &'m Memory,
        function: &'m Function,
        waited: Option<Waited>,
    ) -> Step<'m, T> {
        let timeout = memory.inner.options.lock_timeout;
        match (self.phase, waited) {
            (Phase::FlightWaited, Some(Waited::Flight(true))) => {
                if let Some(value) = memory.find::<T>(function, &self.key, self.mode) {
                    return Step::Done(Lookup::Hit(value));
                }
                // The leader failed: try to lead.
                self.phase = Phase::Flight;
                self.step(memory, function, None)
            }
            (Phase::FlightWaited, Some(Waited::Flight(false))) => {
                crate::log::warning!(
                    "{}: waited {:?} for the same call running in another thread; \
                     computing it here too (lock_timeout)",
                    function.full_name(),
                    timeout.unwrap_or_default()
                );
                self.lock_step(memory, function)
            }
            (Phase::LockWaited, Some(Waited::Lock(outcome))) => {
                match outcome {
                    Ok(LockOutcome::Held(lock)) => {
                        self.lock = Some(lock);
                        // Another process may have finished while we waited.
                        if let Some(value) = memory.find::<T>(function, &self.key, self.mode) {
                            return Step::Done(Lookup::Hit(value));
                        }
                    }
                    Ok(LockOutcome::TimedOut) => crate::log::warning!(
                        "{}: waited {:?} for the same call running in another process; \
                         computing it here too (lock_timeout)",
                        function.full_name(),
                        timeout.unwrap_or_default()
                    ),
                    Ok(LockOutcome::Unsupported) => {}
                    Err(e) => memory.report_io(&e),
                }
                crate::log::info!(
                    "calling {}({})",
                    function.full_name(),
                    trim_brackets(&self.args)
                );
                let mut pending = memory.pending(
                    function,
                    Some(self.state.clone()),
                    Some(self.key),
                    self.shape,
                    std::mem::take(&mut self.args),
                    self.mode,
                );
                pending.lock = self.lock.take();
                pending.leader = self.leader.take();
                Step::Done(Lookup::Miss(pending))
            }
            _ => match memory.lead_or_follow(&self.key) {
                Ok(leader) => {
                    self.leader = Some(leader);
                    self.lock_step(memory, function)
                }
                Err(flight) => {
                    self.phase = Phase::FlightWaited;
                    Step::Wait(Wait::Flight(flight, timeout))
                }
            },
        }
    }

    /// Asks for the key's lock across processes:
    /// `<folder>/ab/<62 hex>.lock`, beside the entry's file.
    fn lock_step<'m, T>(&mut self, memory: &'m Memory, function: &'m Function) -> Step<'m, T> {
        let name = EntryName::key_lock(function.folder(), &self.key)
            .as_str()
            .to_string();
        self.phase = Phase::LockWaited;
        Step::Wait(Wait::Lock(
            memory.inner.store.clone(),
            name,
            memory.inner.options.lock_timeout,
        ))
    }
}
