//! The attribute's compile errors, pinned: each names the offending token
//! and says what to do.

#[test]
fn compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
