//! Work done when the process exits normally: background refreshes
//! (`refresh = "background"`) still running are waited for first, so that
//! a short script does not lose the results they compute; then what parts
//! of the crate keep in memory to write in batches (hit counts, a bucket's
//! access notes) is written. On Unix, through one `atexit` hook for the
//! whole crate; not after a crash or a signal, and nowhere else (there,
//! what a batch holds at exit is lost: counts and access times, and the
//! refreshes still running, never stored results).

use std::sync::{Mutex, Once};

/// A function to run at exit, and its name.
type Hook = (&'static str, fn());

/// The functions to run at exit (each name registered once).
static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// Runs `hook` when the process exits (once, however often this is
/// called with the same `name`). A panic in it is caught.
pub(crate) fn on_exit(name: &'static str, hook: fn()) {
    register(name, hook, false);
}

/// [`on_exit`], run before the hooks registered with `on_exit` (work that
/// the others' batches may then include).
pub(crate) fn on_exit_first(name: &'static str, hook: fn()) {
    register(name, hook, true);
}

fn register(name: &'static str, hook: fn(), first: bool) {
    {
        let mut hooks = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
        if hooks.iter().any(|(n, _)| *n == name) {
            return;
        }
        if first {
            hooks.insert(0, (name, hook));
        } else {
            hooks.push((name, hook));
        }
    }
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        #[cfg(unix)]
        // SAFETY: `run` is an `extern "C" fn()` that does not unwind.
        unsafe {
            libc::atexit(run);
        }
    });
}

#[cfg(unix)]
extern "C" fn run() {
    let hooks: Vec<Hook> = HOOKS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (_, hook) in hooks {
        let _ = std::panic::catch_unwind(hook);
    }
}
