//! Compute once: a call that finds nothing stored takes its turn. Within
//! the process, calls of one key join a flight (the first leads, the others
//! wait on a condition variable); across processes, the leader takes the
//! key's lock in the store. After each wait the caller looks again.
//!
//! This part owns the flights and the state machine of a turn, and nothing
//! else: it knows no codec, no function record, no `Memory`. Looking again
//! is the caller's (a closure given to [`Turn::step`]), and the waits are
//! plain blocking calls ([`Wait::block`]) that the caller runs in place
//! (`Memory::lookup`) or on a thread of its own (`Memory::lookup_async`).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::hot::KeyIdHasher;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::{LockOutcome, Store, StoreLock};

/// The computations running in this process over one location, by key:
/// later callers of the same key wait for them instead of computing again.
#[derive(Default)]
pub(super) struct Flights {
    running: Mutex<HashMap<Key, Arc<Flight>, BuildHasherDefault<KeyIdHasher>>>,
}

impl Flights {
    /// Becomes the leader of `key`'s computation in this process, or gets
    /// the running one to wait for.
    fn lead_or_follow(self: &Arc<Self>, key: &Key) -> std::result::Result<Leader, Arc<Flight>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = running.get(key) {
            return Err(flight.clone());
        }
        let flight = Arc::new(Flight::default());
        running.insert(*key, flight.clone());
        Ok(Leader {
            flights: self.clone(),
            key: *key,
            flight,
        })
    }
}

/// Takes `key`'s turn only if nobody holds it, without waiting: the flight
/// in this process, then the key's lock across processes (`lock_name` in
/// `store`). `Ok(None)` when another thread or process holds either (a
/// background refresh then leaves the key to it). A store without locks
/// gives the flight alone.
pub(super) fn try_turn(
    flights: &Arc<Flights>,
    key: &Key,
    store: &dyn Store,
    lock_name: &str,
) -> Result<Option<Held>> {
    let Ok(leader) = flights.lead_or_follow(key) else {
        return Ok(None);
    };
    let lock = match store.lock(lock_name, Some(Duration::ZERO))? {
        LockOutcome::Held(lock) => Some(lock),
        LockOutcome::TimedOut => return Ok(None),
        LockOutcome::Unsupported => None,
    };
    Ok(Some(Held {
        lock,
        leader: Some(leader),
    }))
}

/// One computation in flight in this process.
#[derive(Default)]
pub(super) struct Flight {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Flight {
    /// Waits until the computation ends; false if `timeout` passed first.
    fn wait(&self, timeout: Option<Duration>) -> bool {
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
    flights: Arc<Flights>,
    key: Key,
    flight: Arc<Flight>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.flights
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        *self.flight.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.flight.cv.notify_all();
    }
}

/// This call's turn to compute, once it has it: the key's lock across
/// processes first, then this process's flight. Dropping it (after the
/// result is written, or when the computation failed) releases both in
/// that order.
#[derive(Default)]
pub(super) struct Held {
    lock: Option<StoreLock>,
    leader: Option<Leader>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // The lock first: a waiter woken by the flight must find the key
        // free across processes.
        drop(self.lock.take());
        drop(self.leader.take());
    }
}

/// A call that found nothing stored, taking its turn to compute.
pub(super) struct Turn {
    key: Key,
    /// The key's lock in the store (a name from `layout`).
    lock_name: String,
    flights: Arc<Flights>,
    store: Arc<dyn Store>,
    timeout: Option<Duration>,
    held: Held,
    phase: Phase,
    /// What this turn gave up waiting for.
    waited_out: WaitedOut,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Join this process's flight for the key.
    Flight,
    /// Waited for another thread's flight.
    FlightWaited,
    /// Waited for the key's lock across processes.
    LockWaited,
}

/// What a turn waits for next: blocking work, run in place (sync) or on a
/// thread of its own (async).
pub(super) enum Wait {
    Flight(Arc<Flight>, Option<Duration>),
    Lock(Arc<dyn Store>, String, Option<Duration>),
}

/// The answer to a [`Wait`], for the next [`Turn::step`].
pub(super) enum Waited {
    Flight(bool),
    Lock(Result<LockOutcome>),
}

impl Waited {
    /// Does the step after this wait look for the result again? (After a
    /// flight that ended, and after taking the key's lock.)
    pub(super) fn calls_for_a_look(&self) -> bool {
        matches!(
            self,
            Waited::Flight(true) | Waited::Lock(Ok(LockOutcome::Held(_)))
        )
    }
}

impl Wait {
    pub(super) fn block(self) -> Waited {
        match self {
            Wait::Flight(flight, timeout) => Waited::Flight(flight.wait(timeout)),
            Wait::Lock(store, name, timeout) => Waited::Lock(store.lock(&name, timeout)),
        }
    }
}

/// The outcome of a [`Turn::step`].
pub(super) enum Step<T> {
    /// Looking again found the result (computed by whoever held the turn).
    Found(T),
    /// This call computes: it holds the turn (as far as it could be
    /// taken). `waited_out` says what it gave up waiting for; `error` is a
    /// failure to take the lock (computed anyway).
    Compute {
        held: Held,
        waited_out: WaitedOut,
        error: Option<Error>,
    },
    /// Wait, then call `step` again with the answer.
    Wait(Wait),
}

/// What a turn gave up waiting for, after `lock_timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct WaitedOut {
    /// The same call running in another thread of this process.
    pub(super) thread: bool,
    /// The same call running in another process.
    pub(super) process: bool,
}

impl Turn {
    /// A turn for `key`, whose lock across processes is `lock_name` in
    /// `store`; waits are bounded by `timeout`.
    pub(super) fn new(
        key: Key,
        lock_name: String,
        flights: Arc<Flights>,
        store: Arc<dyn Store>,
        timeout: Option<Duration>,
    ) -> Turn {
        Turn {
            key,
            lock_name,
            flights,
            store,
            timeout,
            held: Held::default(),
            phase: Phase::Flight,
            waited_out: WaitedOut::default(),
        }
    }

    /// One step of taking the turn; `waited` is the answer to the last
    /// `Step::Wait`, and `look` looks for the result again (after a wait,
    /// someone else may have stored it).
    pub(super) fn step<T>(
        &mut self,
        waited: Option<Waited>,
        look: &mut dyn FnMut() -> Option<T>,
    ) -> Step<T> {
        match (self.phase, waited) {
            (Phase::FlightWaited, Some(Waited::Flight(true))) => {
                if let Some(value) = look() {
                    return Step::Found(value);
                }
                // The leader failed: try to lead.
                self.phase = Phase::Flight;
                self.step(None, look)
            }
            (Phase::FlightWaited, Some(Waited::Flight(false))) => {
                self.waited_out.thread = true;
                self.lock_step()
            }
            (Phase::LockWaited, Some(Waited::Lock(outcome))) => {
                let mut error = None;
                match outcome {
                    Ok(LockOutcome::Held(lock)) => {
                        self.held.lock = Some(lock);
                        // Another process may have finished while we waited.
                        if let Some(value) = look() {
                            return Step::Found(value);
                        }
                    }
                    Ok(LockOutcome::TimedOut) => self.waited_out.process = true,
                    Ok(_) => {}
                    Err(e) => error = Some(e),
                }
                Step::Compute {
                    held: std::mem::take(&mut self.held),
                    waited_out: self.waited_out,
                    error,
                }
            }
            _ => match self.flights.lead_or_follow(&self.key) {
                Ok(leader) => {
                    self.held.leader = Some(leader);
                    self.lock_step()
                }
                Err(flight) => {
                    self.phase = Phase::FlightWaited;
                    Step::Wait(Wait::Flight(flight, self.timeout))
                }
            },
        }
    }

    /// Asks for the key's lock across processes.
    fn lock_step<T>(&mut self) -> Step<T> {
        self.phase = Phase::LockWaited;
        Step::Wait(Wait::Lock(
            self.store.clone(),
            self.lock_name.clone(),
            self.timeout,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    fn turn(flights: &Arc<Flights>, store: &Arc<dyn Store>, timeout: Option<Duration>) -> Turn {
        let key = Key::of(&1u8).unwrap();
        Turn::new(
            key,
            "f/ab/key.lock".into(),
            flights.clone(),
            store.clone(),
            timeout,
        )
    }

    /// Steps `turn` until it computes or finds, running its waits in place.
    fn run(turn: &mut Turn, look: &mut dyn FnMut() -> Option<u8>) -> Step<u8> {
        let mut waited = None;
        loop {
            match turn.step(waited.take(), look) {
                Step::Wait(wait) => waited = Some(wait.block()),
                done => return done,
            }
        }
    }

    #[test]
    fn the_second_turn_of_a_key_waits_for_the_first_and_finds_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let flights = Arc::new(Flights::default());
        let mut first = turn(&flights, &store, None);
        let Step::Compute {
            held,
            waited_out,
            error,
        } = run(&mut first, &mut || None)
        else {
            panic!("the first turn computes");
        };
        assert!(held.lock.is_some() && held.leader.is_some());
        assert!(waited_out == WaitedOut::default() && error.is_none());

        let stored = Arc::new(Mutex::new(None));
        let seen = stored.clone();
        let second = std::thread::spawn(move || {
            let mut second = turn(&flights, &store, None);
            let mut looks = 0;
            let step = run(&mut second, &mut || {
                looks += 1;
                *seen.lock().unwrap()
            });
            (matches!(step, Step::Found(7)), looks)
        });
        std::thread::sleep(Duration::from_millis(100));
        *stored.lock().unwrap() = Some(7);
        drop(held);
        let (found, looks) = second.join().unwrap();
        assert!(found, "the waiter found the leader's result");
        assert_eq!(looks, 1, "it looked once, after the wait");
    }

    #[test]
    fn a_waiter_gives_up_after_the_timeout_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let flights = Arc::new(Flights::default());
        let Step::Compute { held, .. } = run(&mut turn(&flights, &store, None), &mut || None)
        else {
            panic!("the first turn computes");
        };
        // Same process, same key: the flight is taken, then the key's lock
        // (the store keeps one holder per lock in a process too).
        let mut second = turn(&flights, &store, Some(Duration::from_millis(50)));
        let started = Instant::now();
        let step = run(&mut second, &mut || None);
        let Step::Compute {
            waited_out,
            held: second_held,
            ..
        } = step
        else {
            panic!("the waiter computes after the timeout");
        };
        assert!(waited_out.thread && waited_out.process, "{waited_out:?}");
        assert!(second_held.lock.is_none(), "it computes without the lock");
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(held);
    }

    #[test]
    fn try_turn_takes_a_free_key_and_leaves_a_held_one() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let flights = Arc::new(Flights::default());
        let key = Key::of(&1u8).unwrap();
        let name = "f/ab/key.lock";
        let held = try_turn(&flights, &key, &*store, name).unwrap().unwrap();
        assert!(held.lock.is_some() && held.leader.is_some());
        // Another thread of this process: the flight is taken.
        assert!(try_turn(&flights, &key, &*store, name).unwrap().is_none());
        // Another process (its own flights, its own open files): the lock.
        let other_store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let other_flights = Arc::new(Flights::default());
        assert!(try_turn(&other_flights, &key, &*other_store, name)
            .unwrap()
            .is_none());
        assert!(
            other_flights.running.lock().unwrap().is_empty(),
            "a turn not taken leaves no flight behind"
        );
        // A turn that is not taken never blocks a normal one.
        drop(held);
        let again = try_turn(&other_flights, &key, &*other_store, name).unwrap();
        assert!(again.is_some_and(|h| h.lock.is_some()));
        assert!(try_turn(&flights, &key, &*store, name).unwrap().is_some());
    }
}
