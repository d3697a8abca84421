//! The `#[memento::cache]` attribute. Use it through the `memento` crate,
//! which re-exports it and documents it.

use proc_macro::TokenStream;

mod expand;
mod fingerprint;
mod options;

/// Caches a function's results on disk: see the `memento` crate.
///
/// ```text
/// #[memento::cache]
/// fn slow_sine(x: f64) -> f64 { x.sin() }
/// ```
#[proc_macro_attribute]
pub fn cache(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    let item = proc_macro2::TokenStream::from(item);
    match expand::expand(attr, item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
