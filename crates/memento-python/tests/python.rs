//! The Python package's tests, as part of `cargo test`: runs
//! `scripts/test-python.sh` (pytest on `tests/*.py` against the package
//! built from this workspace) and fails when it fails.

use std::path::Path;
use std::process::{exit, Command};

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = repo.join("scripts/test-python.sh");
    let status = Command::new("bash")
        .arg(&script)
        .current_dir(&repo)
        .status()
        .unwrap_or_else(|e| {
            eprintln!("cannot run {}: {e} (is bash installed?)", script.display());
            exit(2)
        });
    if !status.success() {
        eprintln!(
            "the Python tests failed ({status}): run scripts/test-python.sh to see them alone"
        );
        exit(status.code().unwrap_or(1));
    }
}
