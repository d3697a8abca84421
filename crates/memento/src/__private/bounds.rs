//! What a cached function's types must implement, each missing trait one
//! compile error, spanned to the argument or the return type that lacks it
//! and saying what to do.
//!
//! The expansion checks the types (`key_arg` for each keyed argument, the
//! `check` of [`Output`] for the stored result type) and reaches the serde
//! bounds of [`Memory`]'s methods only through autoref specialization on
//! the same bounds: when a type lacks one, the call resolves to a fallback
//! that asks for nothing, so the check's error is the only one (without
//! this, each `Memory::lookup`, `Memory::contains` and `Pending::store`
//! that the expansion calls adds a generic error pointing into memento).
//!
//! The fallbacks are never part of a program that builds: the check that
//! fails whenever one is picked is a compile error. Method resolution
//! decides on what the bounds of a generic function prove, like the check,
//! so a generic function picks the fallback only when its check fails too.
//! With the types satisfied, the calls are the plain ones, inlined.

use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Function, Lookup, Memory, Pending, Refresh, Refreshing};

// ---------------------------------------------------------------------
// Arguments.

/// An argument that goes into the key.
#[diagnostic::on_unimplemented(
    message = "the argument's type `{Self}` does not implement `serde::Serialize`, so it cannot be part of the cache key",
    label = "not serializable",
    note = "derive or implement `serde::Serialize` for it, or leave the argument out of the key with #[memento::cache(ignore(name))]",
    note = "for an ndarray array: memento's `ndarray` feature supports ndarray 0.17, and an array of another ndarray version is another type (`cargo tree -d -i ndarray` shows the versions in use)"
)]
pub trait KeyArg {}

impl<T: Serialize + ?Sized> KeyArg for T {}

/// Spans the "not Serialize" error on the argument that is not.
#[inline(always)]
pub fn key_arg<T: KeyArg + ?Sized>(value: &T) -> &T {
    value
}

/// An argument in the key tuple: `(&Keyed(arg)).keyed()` is the argument
/// itself when it is `Serialize` ([`Keyable`]), else a stand-in
/// ([`Unkeyable`]) so that the tuple is still `Serialize` and only
/// `key_arg`'s error is reported.
pub struct Keyed<'a, T: ?Sized>(pub &'a T);

/// The argument itself.
pub trait Keyable<'a, T: ?Sized> {
    /// The argument.
    fn keyed(&self) -> &'a T;
}

impl<'a, T: Serialize + ?Sized> Keyable<'a, T> for Keyed<'a, T> {
    #[inline(always)]
    fn keyed(&self) -> &'a T {
        self.0
    }
}

/// The stand-in of an argument that is not `Serialize` (never run: its
/// `key_arg` fails to compile).
pub trait NotKeyable {
    /// The stand-in.
    fn keyed(&self) -> &'static Unkeyable;
}

impl<T: ?Sized> NotKeyable for &Keyed<'_, T> {
    #[inline(always)]
    fn keyed(&self) -> &'static Unkeyable {
        &Unkeyable
    }
}

/// See [`NotKeyable`].
pub struct Unkeyable;

impl Serialize for Unkeyable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "an argument that does not implement Serialize",
        ))
    }
}

// ---------------------------------------------------------------------
// The result type.

/// A result type without `Deserialize`.
#[diagnostic::on_unimplemented(
    message = "the result type `{Self}` does not implement `serde::Deserialize`, so it cannot be read back from the cache",
    label = "not deserializable",
    note = "derive or implement `serde::Deserialize` for it (a result is read back as an owned value: `String` rather than `&str`)",
    note = "for an ndarray array: memento's `ndarray` feature supports ndarray 0.17, and an array of another ndarray version is another type (`cargo tree -d -i ndarray` shows the versions in use)"
)]
pub trait ResultDeserialize {}

impl<T: DeserializeOwned> ResultDeserialize for T {}

/// A result type without `Serialize`.
#[diagnostic::on_unimplemented(
    message = "the result type `{Self}` does not implement `serde::Serialize`, so it cannot be stored in the cache",
    label = "not serializable",
    note = "derive or implement `serde::Serialize` for it",
    note = "for an ndarray array: memento's `ndarray` feature supports ndarray 0.17, and an array of another ndarray version is another type (`cargo tree -d -i ndarray` shows the versions in use)"
)]
pub trait ResultSerialize {}

impl<T: Serialize + ?Sized> ResultSerialize for T {}

/// A result type without either.
#[diagnostic::on_unimplemented(
    message = "the result type `{Self}` implements neither `serde::Serialize` nor `serde::Deserialize`, so it cannot be stored in the cache and read back",
    label = "neither serializable nor deserializable",
    note = "derive or implement both: #[derive(serde::Serialize, serde::Deserialize)]",
    note = "for an ndarray array: memento's `ndarray` feature supports ndarray 0.17, and an array of another ndarray version is another type (`cargo tree -d -i ndarray` shows the versions in use)"
)]
pub trait ResultSerde {}

impl<T: Serialize + ?Sized> ResultSerde for T {}

/// The stored result type `T` of a cached function (its output, or the
/// `Ok` of a `Result` output), for autoref specialization on what it
/// implements. `fn() -> T`: `Send` and `Sync` whatever `T` is, so that
/// holding one across an `.await` changes nothing.
pub struct Output<T>(PhantomData<fn() -> T>);

impl<T> Output<T> {
    /// The marker.
    pub const NEW: Self = Output(PhantomData);
}

// The check: `(&&&&Output::<T>::NEW).check::<T>()` resolves to the first
// of these that `T` allows, in this order; the bound on `U` (`T` again,
// written by the expansion with the return type's tokens, so that the
// error points there) is the error of what is missing.

/// `Serialize` and `Deserialize`: nothing is missing.
pub trait CheckSerde {
    /// Nothing to check.
    #[inline(always)]
    fn check<U>(&self) {}
}

impl<T: Serialize + DeserializeOwned> CheckSerde for &&&Output<T> {}

/// `Serialize` only.
pub trait CheckSerialize {
    /// `Deserialize` is missing.
    #[inline(always)]
    fn check<U: ResultDeserialize>(&self) {}
}

impl<T: Serialize> CheckSerialize for &&Output<T> {}

/// `Deserialize` only.
pub trait CheckDeserialize {
    /// `Serialize` is missing.
    #[inline(always)]
    fn check<U: ResultSerialize + ?Sized>(&self) {}
}

impl<T: DeserializeOwned> CheckDeserialize for &Output<T> {}

/// Neither.
pub trait CheckNeither {
    /// Both are missing.
    #[inline(always)]
    fn check<U: ResultSerde + ?Sized>(&self) {}
}

impl<T> CheckNeither for Output<T> {}

// The calls: `(&&Output::<T>::NEW).lookup(..)` is `Memory::lookup` when
// `T` allows it, else a fallback that is never run (the check above failed
// to compile).

/// The `Memory` and `Pending` calls of the expansion, for a stored type
/// with serde.
pub trait Stores<T> {
    /// [`Memory::lookup`].
    fn lookup<'m, A: Serialize + ?Sized>(
        &self,
        memory: &'m Memory,
        function: &'m Function,
        args: &A,
    ) -> Lookup<'m, T>;

    /// [`Memory::lookup_async`].
    fn lookup_async<'m, A: Serialize + ?Sized>(
        &self,
        memory: &'m Memory,
        function: &'m Function,
        args: &A,
    ) -> impl Future<Output = Lookup<'m, T>> + Send + 'm
    where
        T: Send;

    /// [`Memory::contains`].
    fn contains<A: Serialize + ?Sized>(
        &self,
        memory: &Memory,
        function: &Function,
        args: &A,
    ) -> bool;

    /// [`Memory::lookup_refreshing`].
    fn lookup_refreshing<'m, A: Serialize + ?Sized>(
        &self,
        memory: &'m Memory,
        function: &'m Function,
        args: &A,
    ) -> Refreshing<'m, T>;

    /// [`Pending::store`].
    fn store(&self, pending: Pending<'_, T>, value: T) -> T;

    /// [`Pending::store_result`].
    fn store_result<E>(&self, pending: Pending<'_, T>, result: Result<T, E>) -> Result<T, E>;

    /// [`Pending::store_async`].
    fn store_async<'m>(&self, pending: Pending<'m, T>, value: T) -> impl Future<Output = T> + 'm
    where
        T: 'm;

    /// [`Pending::store_result_async`].
    fn store_result_async<'m, E: 'm>(
        &self,
        pending: Pending<'m, T>,
        result: Result<T, E>,
    ) -> impl Future<Output = Result<T, E>> + 'm
    where
        T: 'm;
}

impl<T: Serialize + DeserializeOwned + 'static> Stores<T> for &Output<T> {
    #[inline(always)]
    fn lookup<'m, A: Serialize + ?Sized>(
        &self,
        memory: &'m Memory,
        function: &'m Function,
        args: &A,
    ) -> Lookup<'m, T> {
        memory.lookup(function, args)
    }

    #[inline(always)]
    fn lookup_async<'m, A: Serialize + ?Sized>(
        &self,
        memory: &'m Memory,
        function: &'m Function,
        args: &A,
    ) -> impl Future<Output = Lookup<'m, T>> + Send + 'm
    where
        T: Send,
    {
        memory.lookup_async(function, args)
    }

    #[inline(always)]
    fn contains<A: Serialize + ?Sized>(
        &self,
        memory: &Memory,
        function: &Function,
        args: &A,
    ) -> bool {
        memory.contains::<T, A>(function, args)
    }

    #[inline(always)]
    fn lookup_refreshing<'m, A: Serialize + ?Sized>(
        &self,
        memory: &'m Memory,
        function: &'m Function,
        args: &A,
    ) -> Refreshing<'m, T> {
        memory.lookup_refreshing(function, args)
    }

    #[inline(always)]
    fn store(&self, pending: Pending<'_, T>, value: T) -> T {
        pending.store(value)
    }

    #[inline(always)]
    fn store_result<E>(&self, pending: Pending<'_, T>, result: Result<T, E>) -> Result<T, E> {
        pending.store_result(result)
    }

    #[inline(always)]
    fn store_async<'m>(&self, pending: Pending<'m, T>, value: T) -> impl Future<Output = T> + 'm
    where
        T: 'm,
    {
        pending.store_async(value)
    }

    #[inline(always)]
    fn store_result_async<'m, E: 'm>(
        &self,
        pending: Pending<'m, T>,
        result: Result<T, E>,
    ) -> impl Future<Output = Result<T, E>> + 'm
    where
        T: 'm,
    {
        pending.store_result_async(result)
    }
}

/// The fallback of [`Stores`] for a stored type without serde: never run,
/// it only lets the expansion type-check while the check reports the
/// missing trait.
pub trait DoesNotStore<T> {
    /// Never run.
    fn lookup<'m, A: ?Sized>(&self, _: &'m Memory, _: &'m Function, _: &A) -> Lookup<'m, T> {
        unreachable!("a result type without serde cannot be cached")
    }

    /// Never run.
    fn lookup_async<'m, A: ?Sized>(
        &self,
        _: &'m Memory,
        _: &'m Function,
        _: &A,
    ) -> impl Future<Output = Lookup<'m, T>> + Send + 'm
    where
        T: Send,
    {
        async { unreachable!("a result type without serde cannot be cached") }
    }

    /// Never run.
    fn contains<A: ?Sized>(&self, _: &Memory, _: &Function, _: &A) -> bool {
        unreachable!("a result type without serde cannot be cached")
    }

    /// Never run.
    fn lookup_refreshing<'m, A: ?Sized>(
        &self,
        _: &'m Memory,
        _: &'m Function,
        _: &A,
    ) -> Refreshing<'m, T> {
        unreachable!("a result type without serde cannot be cached")
    }

    /// Never run.
    fn store(&self, _: Pending<'_, T>, _: T) -> T {
        unreachable!("a result type without serde cannot be cached")
    }

    /// Never run.
    fn store_result<E>(&self, _: Pending<'_, T>, _: Result<T, E>) -> Result<T, E> {
        unreachable!("a result type without serde cannot be cached")
    }

    /// Never run.
    fn store_async<'m>(&self, _: Pending<'m, T>, _: T) -> impl Future<Output = T> + 'm
    where
        T: 'm,
    {
        async { unreachable!("a result type without serde cannot be cached") }
    }

    /// Never run.
    fn store_result_async<'m, E: 'm>(
        &self,
        _: Pending<'m, T>,
        _: Result<T, E>,
    ) -> impl Future<Output = Result<T, E>> + 'm
    where
        T: 'm,
    {
        async { unreachable!("a result type without serde cannot be cached") }
    }
}

impl<T> DoesNotStore<T> for Output<T> {}

// ---------------------------------------------------------------------
// `refresh = "background"`: the recomputation runs on a thread of its own
// and takes the call's arguments there.

/// An argument of a function whose expired results are refreshed in the
/// background.
#[diagnostic::on_unimplemented(
    message = "the argument's type `{Self}` cannot be sent to the thread that refreshes an expired result",
    label = "not `Send`",
    note = "with refresh = \"background\", an expired result is computed again on a thread of its own, which takes the call's arguments: they must be `Send` and `'static` (owned values: `Arc` rather than `Rc`, `String` rather than `&str`)"
)]
pub trait RefreshArg {}

impl<T: Send + 'static> RefreshArg for T {}

/// Spans the "not Send" error on the argument that is not.
#[inline(always)]
pub fn refresh_arg<T: RefreshArg>(_: &T) {}

/// The arguments `A` (a tuple) of a function storing `T`, for autoref
/// specialization: [`Spawns`] when `T` has serde and `A` can go to
/// another thread, else [`DoesNotSpawn`] (never run: the checks of the
/// result type and of each argument report what is missing, once). The
/// computation given to `spawn` captures the arguments' tuple alone.
pub struct Spawner<T, A>(PhantomData<fn() -> (T, A)>);

impl<T, A> Spawner<T, A> {
    /// The marker of `args`'s type.
    #[inline(always)]
    pub fn of(_args: &A) -> Self {
        Spawner(PhantomData)
    }
}

/// [`Refresh::spawn`] and [`Refresh::spawn_result`], when the types allow.
pub trait Spawns<T> {
    /// [`Refresh::spawn`].
    fn spawn<F>(&self, refresh: Refresh<T>, compute: F)
    where
        F: FnOnce() -> T + Send + 'static;

    /// [`Refresh::spawn_result`].
    fn spawn_result<E, F>(&self, refresh: Refresh<T>, compute: F)
    where
        F: FnOnce() -> Result<T, E> + Send + 'static;
}

impl<T, A> Spawns<T> for &Spawner<T, A>
where
    T: Serialize + DeserializeOwned + 'static,
    A: Send + 'static,
{
    #[inline(always)]
    fn spawn<F>(&self, refresh: Refresh<T>, compute: F)
    where
        F: FnOnce() -> T + Send + 'static,
    {
        refresh.spawn(compute)
    }

    #[inline(always)]
    fn spawn_result<E, F>(&self, refresh: Refresh<T>, compute: F)
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
    {
        refresh.spawn_result(compute)
    }
}

/// The fallback of [`Spawns`]: never run.
pub trait DoesNotSpawn<T> {
    /// Never run.
    fn spawn<F>(&self, _: Refresh<T>, _: F) {
        unreachable!("checked at compile time")
    }

    /// Never run.
    fn spawn_result<F>(&self, _: Refresh<T>, _: F) {
        unreachable!("checked at compile time")
    }
}

impl<T, A> DoesNotSpawn<T> for Spawner<T, A> {}
