//! The `#[memento::cache]` and `#[memento::tracked]` attributes. Use them
//! through the `memento` crate, which re-exports them and documents them.

use proc_macro::TokenStream;

mod depends;
mod expand;
mod fingerprint;
mod options;
mod tracked;

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

/// Exposes a helper's fingerprint to `#[memento::cache(depends(helper))]`:
/// see the `memento` crate.
///
/// ```text
/// #[memento::tracked]
/// fn helper(x: f64) -> f64 { x * 2.0 }
/// ```
#[proc_macro_attribute]
pub fn tracked(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    let item = proc_macro2::TokenStream::from(item);
    match tracked::expand(attr, item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
