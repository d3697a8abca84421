//! The attribute's compile errors, pinned: each names the offending token
//! and says what to do.
//!
//! trybuild compiles all cases in one `cargo check` of a project of its own
//! (each case a binary of it). That project takes the dev-dependencies of
//! this crate, which are memento, serde and trybuild alone: see Cargo.toml.

#[test]
fn compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
