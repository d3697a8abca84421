//! macOS: an extension module leaves the interpreter's symbols undefined
//! (`-undefined dynamic_lookup`); elsewhere this adds nothing.
fn main() {
    pyo3_build_config::add_extension_module_link_args();
}
