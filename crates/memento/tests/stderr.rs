//! Without a `tracing` subscriber, memento's warnings reach stderr (one
//! line each), as joblib prints by default; `MEMENTO_LOG` chooses what goes
//! there.

use std::process::Command;

/// Set in the child process: the folder to use.
const CHILD: &str = "MEMENTO_STDERR_TEST_DIR";
/// Set in the child process: the version of the function's code (1 or 2).
const CODE: &str = "MEMENTO_STDERR_TEST_CODE";

/// In the child: one call of a function whose code is version `code`, with
/// no subscriber installed.
fn child(dir: &str, code: u8) {
    let memory = memento::Memory::new(dir);
    let f = memento::Function::new("stderr", "f").__code([code; 32], "fn f()", false);
    let _: u32 = memory.call(&f, &1u32, || code.into());
}

/// Stores a result with code 1, then calls with code 2 (a warning that its
/// results are removed); the second process's stderr.
fn run_children(log: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut stderr = String::new();
    for code in ["1", "2"] {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir.path())
        .env(CODE, code);
        match log {
            Some(level) => cmd.env(memento::MEMENTO_LOG, level),
            None => cmd.env_remove(memento::MEMENTO_LOG),
        };
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    stderr
}

#[test]
fn child_process() {
    if let (Ok(dir), Ok(code)) = (std::env::var(CHILD), std::env::var(CODE)) {
        child(&dir, code.parse().unwrap());
    }
}

#[test]
fn warnings_reach_stderr_without_a_subscriber() {
    let stderr = run_children(None);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[memento] warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("stored result(s) are removed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("calling"),
        "info lines stay quiet: {stderr}"
    );
}

#[test]
fn memento_log_chooses_what_reaches_stderr() {
    let info = run_children(Some("info"));
    assert!(
        info.lines()
            .any(|l| l.starts_with("[memento] calling stderr::f")),
        "{info}"
    );
    let off = run_children(Some("off"));
    assert!(!off.contains("[memento]"), "{off}");
}
