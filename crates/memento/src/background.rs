//! Work moved off an async executor's threads: the writes of a result
//! computed by an `async fn` run on a thread of their own, awaited through a
//! small future that works with any executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<R> {
    value: Option<R>,
    waker: Option<Waker>,
}

/// The result of [`run`], once the thread is done.
pub(crate) struct Background<R> {
    slot: Arc<Mutex<Slot<R>>>,
}

/// Runs `work` on a new thread. If no thread can be started, it runs here,
/// now.
pub(crate) fn run<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Background<R> {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
    }));
    let work = Arc::new(Mutex::new(Some(work)));
    let (thread_slot, thread_work) = (slot.clone(), work.clone());
    let spawned = std::thread::Builder::new()
        .name("memento-write".into())
        .spawn(move || {
            let work = thread_work.lock().ok().and_then(|mut w| w.take());
            if let Some(work) = work {
                let value = work();
                let mut slot = thread_slot.lock().unwrap_or_else(|e| e.into_inner());
                slot.value = Some(value);
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        });
    if spawned.is_err() {
        let work = work.lock().ok().and_then(|mut w| w.take());
        if let Some(work) = work {
            slot.lock().unwrap_or_else(|e| e.into_inner()).value = Some(work());
        }
    }
    Background { slot }
}

impl<R> Future for Background<R> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.value.take() {
            Some(value) => Poll::Ready(value),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
