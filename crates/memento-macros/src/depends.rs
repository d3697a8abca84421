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
//! module (`use self::*`): a helper declared in a function's body is
//! behind the stand-in, and cannot be named (the error says so). A path
//! whose last qualifier starts with an upper-case letter is a type's; other
//! qualifiers are modules. `Self::method` is checked by a trait bound
//! instead (see [`call`]).

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
        if out.contains(&inner.path) {
            return Err(inner.error("this function is named twice in depends(..)"));
        }
        out.push(inner.path.clone());
        Ok(())
    })
}

/// Does a path in `depends` start with `Self` (so it can only be read
/// inside the method's `impl` block)?
pub(crate) fn mentions_self(paths: &[Path]) -> bool {
    paths
        .iter()
        .any(|p| p.segments.first().is_some_and(|s| s.ident == "Self"))
}

/// `callee(code, depends, self_depends)` (`Tracked::new` or
/// `with_depends`) with the helpers' fingerprints, checked (see the
/// module's doc), after the statements that check them: a block, for a
/// const initializer as well as for code.
///
/// Paths through `Self` cannot be read in a const item (which cannot name
/// `Self`), so they are read in place, `&<Self>::__memento_tracked_method`
/// (a promotable constant); a trait bound checks that one, at type
/// checking, with the same stand-in technique.
pub(crate) fn call(paths: &[Path], callee: TokenStream, code: TokenStream) -> TokenStream {
    let mixed = Span::mixed_site();
    let mut consts = Vec::new();
    let mut checks = Vec::new();
    let mut selfs = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if path.segments.first().is_some_and(|s| s.ident == "Self") {
            let (check, value) =
                self_checked(path, format_ident!("__MementoUntracked{}", i, span = mixed));
            checks.push(check);
            selfs.push(value);
        } else {
            consts.push(checked(path));
        }
    }
    // One const per name, so that each name that is not tracked is an
    // error of its own (const evaluation stops at the first panic).
    let names: Vec<syn::Ident> = (0..consts.len())
        .map(|i| format_ident!("__MEMENTO_DEPENDS_{}", i, span = mixed))
        .collect();
    quote! {{
        #(const #names: &::memento::__private::Tracked = #consts;)*
        #(#checks)*
        #callee(#code, &[#(#names),*], &[#(#selfs),*])
    }}
}

/// A path that does not start with `Self`: a const-evaluable
/// `&'static Tracked`, which stops the build when the name is not tracked.
fn checked(path: &Path) -> TokenStream {
    let segments: Vec<&syn::PathSegment> = path.segments.iter().collect();
    let (last, qualifiers) = segments.split_last().expect("a parsed path has a segment");
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
         #[memento::tracked] to `{name}`, and name it by the path of the module or type that \
         declares it: depends(helper), depends(module::helper), depends(Type::method) (a \
         function declared inside another function's body cannot be named)"
    );
    let mixed = Span::mixed_site();
    let is_type = qualifiers.last().is_some_and(|q| {
        q.ident
            .to_string()
            .trim_start_matches("r#")
            .starts_with(|c: char| c.is_uppercase())
    });
    if is_type {
        let leading = path.leading_colon;
        let qualifiers = qualifiers.iter();
        let untracked = format_ident!("__MementoUntracked", span = mixed);
        let check = quote_spanned!(name.span()=>
            ::memento::__private::tracked(&<#leading #(#qualifiers)::*>::#constant, #message)
        );
        quote! {{
            #[allow(non_upper_case_globals, dead_code)]
            trait #untracked {
                const #constant: ::memento::__private::Tracked =
                    ::memento::__private::Tracked::UNTRACKED;
            }
            impl<T: ?::core::marker::Sized> #untracked for T {}
            #check
        }}
    } else {
        let module = if qualifiers.is_empty() {
            quote!(self)
        } else {
            let leading = path.leading_colon;
            let qualifiers = qualifiers.iter();
            quote!(#leading #(#qualifiers)::*)
        };
        let check = quote_spanned!(name.span()=>
            ::memento::__private::tracked(&#constant, #message)
        );
        quote! {{
            #[allow(non_upper_case_globals, dead_code)]
            const #constant: ::memento::__private::Tracked =
                ::memento::__private::Tracked::UNTRACKED;
            {
                #[allow(unused_imports)]
                use #module::*;
                #check
            }
        }}
    }
}

/// A path that starts with `Self`: the statements that check it (a trait
/// bound, whose error names the helper through a marker type of its name)
/// and its value, `&<Self>::__memento_tracked_method`.
fn self_checked(path: &Path, untracked: syn::Ident) -> (TokenStream, TokenStream) {
    let last = path.segments.last().expect("a parsed path has a segment");
    let name = &last.ident;
    let qualifiers = path.segments.iter().take(path.segments.len() - 1);
    let constant = const_name(name);
    let is_tracked = check_name(name);
    let marker = format_ident!(
        "{}",
        name.to_string().trim_start_matches("r#"),
        span = name.span()
    );
    let qualifiers = quote!(#(#qualifiers)::*);
    let check = quote_spanned!(name.span()=>
        ::memento::__private::is_tracked::<#marker, _>(&<#qualifiers>::#is_tracked);
    );
    let checks = quote! {
        #[allow(non_camel_case_types, dead_code)]
        struct #marker;
        #[allow(non_upper_case_globals, dead_code)]
        trait #untracked {
            const #constant: ::memento::__private::Tracked =
                ::memento::__private::Tracked::UNTRACKED;
            const #is_tracked: ::memento::__private::Untracked<#marker> =
                ::memento::__private::Untracked::NEW;
        }
        impl<T: ?::core::marker::Sized> #untracked for T {}
        #check
    };
    (checks, quote!(&<#qualifiers>::#constant))
}

/// The name of the second const of a tracked helper, which only says that
/// it is tracked (for `depends(Self::method)`'s check).
pub(crate) fn check_name(helper: &syn::Ident) -> syn::Ident {
    let name = helper.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    format_ident!("__memento_is_tracked_{}", name, span = helper.span())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(attr: &str) -> syn::Result<Vec<Path>> {
        crate::options::parse(attr.parse().unwrap()).map(|o| o.depends)
    }

    #[test]
    fn names_are_paths() {
        let p = paths("depends(a, m::b, crate::x::c, Self::d, ::k::e), version = \"2\"").unwrap();
        let text: Vec<String> = p
            .iter()
            .map(|p| quote!(#p).to_string().replace(' ', ""))
            .collect();
        assert_eq!(text, ["a", "m::b", "crate::x::c", "Self::d", "::k::e"]);
        assert!(mentions_self(&p));
        assert!(!mentions_self(&p[..3]));
    }

    #[test]
    fn bad_names_are_refused() {
        for (attr, says) in [
            ("depends(a, a)", "named twice"),
            ("depends(a = 1)", "takes the paths"),
            ("depends(a(b))", "takes the paths"),
        ] {
            let e = paths(attr)
                .err()
                .unwrap_or_else(|| panic!("{attr} accepted"));
            assert!(e.to_string().contains(says), "{attr}: {e}");
        }
    }

    #[test]
    fn const_names_follow_the_helper() {
        let id: syn::Ident = syn::parse_str("r#type").unwrap();
        assert_eq!(const_name(&id).to_string(), "__memento_tracked_type");
        assert_eq!(check_name(&id).to_string(), "__memento_is_tracked_type");
        // The two families never meet: a helper named `is_tracked_x` has
        // another const than the check of `x`.
        let x: syn::Ident = syn::parse_str("x").unwrap();
        let other: syn::Ident = syn::parse_str("is_tracked_x").unwrap();
        assert_ne!(const_name(&other).to_string(), check_name(&x).to_string());
    }

    /// Module paths are looked up by a glob import of the module, type
    /// paths as associated consts, `Self` paths by a trait bound.
    #[test]
    fn each_kind_of_path_is_looked_up_its_way() {
        let code = |attr: &str| {
            call(&paths(attr).unwrap(), quote!(f), quote!(c))
                .to_string()
                .replace(' ', "")
        };
        let bare = code("depends(helper)");
        assert!(bare.contains("useself::*;"), "{bare}");
        assert!(bare.contains("f(c,&[__MEMENTO_DEPENDS_0],&[])"), "{bare}");
        let module = code("depends(a::b::helper)");
        assert!(module.contains("usea::b::*;"), "{module}");
        let ty = code("depends(m::Lens::focus)");
        assert!(ty.contains("&<m::Lens>::__memento_tracked_focus"), "{ty}");
        assert!(!ty.contains("use"), "{ty}");
        let this = code("depends(Self::focus, helper)");
        assert!(this.contains("is_tracked::<focus,_>(&<Self>::__memento_is_tracked_focus)"));
        assert!(this.contains("f(c,&[__MEMENTO_DEPENDS_0],&[&<Self>::__memento_tracked_focus])"));
    }
}
