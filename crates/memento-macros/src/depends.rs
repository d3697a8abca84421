//! `depends(helper, module::helper, Self::method)`: the helpers a function
//! calls, whose `#[memento::tracked]` fingerprints are folded into its own.
//!
//! `#[memento::tracked]` on `helper` writes a const `__memento_tracked_helper`
//! beside it (an associated const for a method), so the path
//! `module::helper` names its fingerprint as `module::__memento_tracked_helper`.
//! A name that is not tracked must be one compile error that says what to
//! add, not rustc's "cannot find value `__memento_tracked_helper`". So each
//! name is looked up with a stand-in behind it, found only when the real
//! const is missing, and the stand-in stops the build in const evaluation
//! (`memento::__private::tracked`) with the message, spanned at the name:
//!
//! ```text
//! // depends(module::helper)            // depends(Type::method)
//! {                                     {
//!     const __memento_tracked_helper =      trait Untracked {
//!         Tracked::UNTRACKED;                   const __memento_tracked_method =
//!     {                                             Tracked::UNTRACKED;
//!         use module::*; // the real one    }
//!         tracked(&__memento_tracked_helper, impl<T: ?Sized> Untracked for T {}
//!                 "add #[memento::tracked] ..") // an inherent const goes first
//!     }                                     tracked(&<Type>::__memento_tracked_method, "..")
//! }                                     }
//! ```
//!
//! An inner block's glob import goes before an outer block's item, and an
//! inherent associated const before a trait's, so the stand-in is found
//! only when the name is not tracked. A bare `helper` is looked up in the
//! module (`use self::*`). A path whose last qualifier is `Self` or starts
//! with an upper-case letter is a type's; other qualifiers are modules.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::Path;

/// The prefix of the const a tracked helper writes beside itself.
pub(crate) const PREFIX: &str = "__memento_tracked_";

/// The const's name for a helper's name.
pub(crate) fn const_name(helper: &syn::Ident) -> syn::Ident {
    let name = helper.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    format_ident!("{}{}", PREFIX, name, span = helper.span())
}

/// Parses `depends(a, m::b)` in `meta` into `out`.
pub(crate) fn parse(meta: syn::meta::ParseNestedMeta<'_>, out: &mut Vec<Path>) -> syn::Result<()> {
    meta.parse_nested_meta(|inner| {
        if inner.input.peek(syn::token::Paren) || inner.input.peek(syn::Token![=]) {
            return Err(inner.error(
                "`depends(..)` takes the paths of #[memento::tracked] functions, such as \
                 depends(helper, module::helper, Self::method)",
            ));
        }
        out.push(inner.path.clone());
        Ok(())
    })
}

/// Does a path in `depends` name `Self` (so it can only be read inside the
/// method's `impl` block)?
pub(crate) fn mentions_self(paths: &[Path]) -> bool {
    paths
        .iter()
        .any(|p| p.segments.iter().any(|s| s.ident == "Self"))
}

/// The `&'static Tracked` of each path, checked (see the module's doc).
pub(crate) fn checked(paths: &[Path]) -> Vec<TokenStream> {
    paths.iter().map(checked_one).collect()
}

fn checked_one(path: &Path) -> TokenStream {
    let segments: Vec<&syn::PathSegment> = path.segments.iter().collect();
    let (last, qualifiers) = segments
        .split_last()
        .expect("a parsed path has a segment");
    let name = &last.ident;
    let constant = const_name(name);
    let written = {
        let mut text = String::new();
        if path.leading_colon.is_some() {
            text.push_str("::");
        }
        let parts: Vec<String> = segments.iter().map(|s| s.ident.to_string()).collect();
        text.push_str(&parts.join("::"));
        text
    };
    let message = format!(
        "`{written}` in depends(..) is not a #[memento::tracked] function: add \
         #[memento::tracked] to `{name}` (and name it by the path of the module or type that \
         defines it: depends(helper), depends(module::helper), depends(Self::method))"
    );
    let tracked = quote_spanned!(name.span()=> ::memento::__private::tracked);
    let mixed = Span::mixed_site();
    let is_type = qualifiers.last().is_some_and(|q| {
        q.ident == "Self"
            || q.ident
                .to_string()
                .trim_start_matches("r#")
                .starts_with(|c: char| c.is_uppercase())
    });
    if is_type {
        let leading = path.leading_colon;
        let qualifiers = qualifiers.iter();
        let untracked = format_ident!("__MementoUntracked", span = mixed);
        quote! {{
            #[allow(non_upper_case_globals, dead_code)]
            trait #untracked {
                const #constant: ::memento::__private::Tracked =
                    ::memento::__private::Tracked::UNTRACKED;
            }
            impl<T: ?::core::marker::Sized> #untracked for T {}
            #tracked(&<#leading #(#qualifiers)::*>::#constant, #message)
        }}
    } else {
        let module = if qualifiers.is_empty() {
            quote!(self)
        } else {
            let leading = path.leading_colon;
            let qualifiers = qualifiers.iter();
            quote!(#leading #(#qualifiers)::*)
        };
        quote! {{
            #[allow(non_upper_case_globals, dead_code)]
            const #constant: ::memento::__private::Tracked =
                ::memento::__private::Tracked::UNTRACKED;
            {
                #[allow(unused_imports)]
                use #module::*;
                #tracked(&#constant, #message)
            }
        }}
    }
}
