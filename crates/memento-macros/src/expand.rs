//! The expansion: the function keeps its signature and its body is rewritten
//! in place into `memento::Memory::lookup` + compute + `Pending::store`.
//!
//! ```text
//! fn f(x: f64) -> f64 {
//!     static __MEMENTO_FUNCTION: LazyLock<memento::Function> = ...;
//!     (&&&&Output::<f64>::NEW).check::<f64>();
//!     let __memento_pending = match (&&Output::<f64>::NEW).lookup(
//!         memory,
//!         &__MEMENTO_FUNCTION,
//!         &((&Keyed(key_arg((&Probe(&x)).key_arg()))).keyed(),),
//!     ) {
//!         Lookup::Hit(value) => return value,
//!         Lookup::Miss(pending) => pending,
//!     };
//!     let __memento_value: f64 = (|| -> f64 { /* the original body */ })();
//!     (&&Output::<f64>::NEW).store(__memento_pending, __memento_value)
//! }
//! ```
//!
//! The body runs in a closure so that its `return`s and `?`s keep their
//! meaning; the arguments are only borrowed for the key, before the closure,
//! so the body may still consume them.
//!
//! `key_arg` and `check` are the compile errors of an argument or a result
//! type without serde, one for each, spanned to it; the rest resolves by
//! autoref to the plain `Memory::lookup` and `Pending::store` calls (inlined
//! away) when the types have serde, and to fallbacks that report nothing
//! more when not (memento's `__private::bounds` tells how).

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, Ident, ItemFn, Pat, ReturnType, Type};

use crate::fingerprint::fingerprint;
use crate::options::{self, Options};

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let options = options::parse(attr)?;
    let function: ItemFn = syn::parse2(item)?;
    check_signature(&function)?;
    if let Some(refresh) = &options.refresh {
        check_refresh(&function, &options, refresh)?;
    }
    let keyed = keyed_bindings(&function, &options)?;

    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &function;
    let name = sig.ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let version = options.version.clone().unwrap_or_default();
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let is_result = options.result.unwrap_or_else(|| is_result_type(&ret));
    // With `mmap` the signature says `Mapped<T>` (or `Result<Mapped<T>, E>`)
    // and the body returns the `T` (or `Result<T, E>`) itself.
    let (body_ret, to_ret) = match options.mmap {
        None => (ret.clone(), quote!()),
        Some(_) => {
            if let Some(compress) = &options.compress {
                return Err(syn::Error::new(
                    compress.span(),
                    "`mmap` and `compress` cannot be combined: a compressed result must be \
                     decompressed into memory, so it cannot be mapped; remove one of them",
                ));
            }
            let body_ret = unmapped(&ret, is_result).ok_or_else(|| {
                syn::Error::new_spanned(
                    &ret,
                    "#[memento::cache(mmap)] returns `memento::Mapped<T>`: write the return type \
                     as `memento::Mapped<Vec<f64>>` (or an ndarray `Array`, or \
                     `Result<Mapped<..>, E>`), and return the `T` itself from the body",
                )
            })?;
            let convert = if is_result {
                quote!(.map(::core::convert::From::from))
            } else {
                quote!(.into())
            };
            (body_ret, convert)
        }
    };
    // What changes the results: the keyed arguments and what is stored.
    // (`memory`, `version`, `keep_versions`, `expires_after` and `validate`
    // do not: the version is keyed on its own.)
    let ignored = &options.ignore;
    let keying = quote!(ignore(#(#ignored),*) result = #is_result);
    let fp = fingerprint(&[keying, sig.to_token_stream(), block.to_token_stream()]);
    let signature = sig.to_token_stream().to_string();
    let generic = sig
        .generics
        .params
        .iter()
        .any(|p| !matches!(p, GenericParam::Lifetime(_)));

    let mixed = Span::mixed_site();
    let func = format_ident!("__MEMENTO_FUNCTION", span = mixed);
    let memory = format_ident!("__memento_memory", span = mixed);
    let pending = format_ident!("__memento_pending", span = mixed);
    let value = format_ident!("__memento_value", span = mixed);

    let memory_expr = match &options.memory {
        Some(expr) => quote_spanned!(expr.span()=> &#expr),
        None => quote!(::memento::__private::default_memory()),
    };
    // Plain buffers (Vec<f64>, arrays) take the buffer form of the key,
    // everything else serde: chosen by type (autoref). Then `key_arg`
    // reports an argument without `Serialize`, and `Keyed` puts a stand-in
    // for it in the tuple, so that the tuple's own `Serialize` bound reports
    // nothing more. The handle's copy of the key leaves `key_arg` out: the
    // function's own reports it (else rustc counts the error twice).
    let key_args_with = |check: bool| -> Vec<TokenStream> {
        let mut key_args: Vec<TokenStream> = keyed
            .iter()
            .map(|ident| {
                let probe = quote_spanned!(ident.span()=>
                    (&::memento::__private::Probe(&#ident)).key_arg()
                );
                let arg = if check {
                    quote_spanned!(ident.span()=> ::memento::__private::key_arg(#probe))
                } else {
                    probe
                };
                quote_spanned!(ident.span()=> {
                    #[allow(unused_imports)]
                    use ::memento::__private::{Keyable as _, NotKeyable as _, ViaBuffer as _, ViaSerde as _};
                    (&::memento::__private::Keyed(#arg)).keyed()
                },)
            })
            .collect();
        // The concrete types and constants of a generic function are part
        // of the key: `f::<u8>()` and `f::<u64>()` may differ with equal
        // arguments.
        for param in &sig.generics.params {
            match param {
                GenericParam::Type(t) => {
                    let t = &t.ident;
                    key_args.push(quote!(::std::any::type_name::<#t>(),));
                }
                GenericParam::Const(c) => {
                    let c = &c.ident;
                    key_args.push(quote!(#c,));
                }
                GenericParam::Lifetime(_) => {}
            }
        }
        key_args
    };
    let key_args = key_args_with(true);
    let stored = stored_type(&ret, is_result);
    // One error for a stored type without serde, at the return type; the
    // `Memory` and `Pending` calls go through `Output`, which reports
    // nothing more (see memento's `__private::bounds`). A return type of one
    // token spans the call too, so that the error has no second label ("a
    // bound introduced by this call") at the attribute.
    let call_span = match ret.to_token_stream().into_iter().count() {
        1 => outer_spans(&ret).0,
        _ => Span::call_site(),
    };
    let check = quote_spanned! {call_span=>
        {
            #[allow(unused_imports)]
            use ::memento::__private::{
                CheckDeserialize as _, CheckNeither as _, CheckSerde as _, CheckSerialize as _,
            };
            (&&&&::memento::__private::Output::<#stored>::NEW).check::<#stored>();
        }
    };
    let stores = quote! {
        #[allow(unused_imports)]
        use ::memento::__private::{DoesNotStore as _, Stores as _};
    };
    let output = quote!((&&::memento::__private::Output::<#stored>::NEW));
    let (hit, store) = if is_result {
        (
            quote!(::core::result::Result::Ok(#value)),
            quote!(store_result),
        )
    } else {
        (quote!(#value), quote!(store))
    };

    // The keyed arguments' names, then the type and const parameters',
    // as the key's tuple holds them: a miss says which one changed.
    let argument_names: Vec<String> = keyed
        .iter()
        .map(|ident| ident.to_string())
        .chain(sig.generics.params.iter().filter_map(|p| match p {
            GenericParam::Type(t) => Some(t.ident.to_string()),
            GenericParam::Const(c) => Some(c.ident.to_string()),
            GenericParam::Lifetime(_) => None,
        }))
        .collect();
    let argument_count = argument_names.len();
    let mut management = TokenStream::new();
    if options.keep_versions {
        management.extend(quote!(.keep_versions(true)));
    }
    if let Some((ttl, span)) = &options.expires_after {
        let (secs, nanos) = (ttl.as_secs(), ttl.subsec_nanos());
        management.extend(quote_spanned!(*span=> .expires_after(
            ::std::time::Duration::new(#secs, #nanos)
        )));
    }
    if let Some((least, span)) = &options.min_duration {
        let (secs, nanos) = (least.as_secs(), least.subsec_nanos());
        management.extend(quote_spanned!(*span=> .min_duration(
            ::std::time::Duration::new(#secs, #nanos)
        )));
    }
    if let Some(validate) = &options.validate {
        management.extend(quote_spanned!(validate.span()=> .validate(#validate)));
    }
    if let Some(compress) = &options.compress {
        management.extend(quote_spanned!(compress.span()=> .compress({
            const COMPRESSION: ::memento::codec::Compression =
                ::memento::__private::compression(#compress);
            COMPRESSION
        })));
    }

    let fn_ident = &sig.ident;
    let with_handle = options.handle.unwrap_or(true)
        && !mentions_self(&function)
        && !crate::depends::mentions_self(&options.depends)
        && !has_receiver(&function);
    // `module_path!()` cannot see an impl block's type or enclosing
    // functions; the type name of an item declared beside the static can.
    let here = format_ident!("__memento_here");
    let strip = if with_handle {
        "::function::__memento_here"
    } else {
        "::__memento_here"
    };
    // With `depends(..)`, the helpers' fingerprints are folded into the
    // code's, once, when the `Function` is made (never per call); without
    // it the code fingerprint is the tokens' alone, as it always was.
    let code = if options.depends.is_empty() {
        quote!([#(#fp),*])
    } else {
        crate::depends::call(
            &options.depends,
            quote!(::memento::__private::with_depends),
            quote!([#(#fp),*]),
        )
    };
    let new_function = quote! {{
        let module = ::core::module_path!();
        let name = ::memento::__private::qualified_name(
            module,
            ::std::any::type_name_of_val(&#here),
            #strip,
            #name,
        );
        ::memento::Function::new(module, name)
            .version(#version)
            .__code(#code, #signature, #generic)
            .argument_names({
                let names: [&str; #argument_count] = [#(#argument_names),*];
                names
            })
            #management
    }};
    let make_function = quote! {
        ::std::sync::LazyLock::new(|| #new_function)
    };
    let (function_static, function_ref, handle) = if with_handle {
        let handle = handle_module(
            &function,
            &ret,
            &stored,
            &key_args_with(false),
            &memory_expr,
            &make_function,
        );
        (quote!(), quote!(#fn_ident::function()), handle)
    } else if crate::depends::mentions_self(&options.depends) {
        // `depends(Self::method)` can only be read in the method's body
        // (a static's initializer cannot name `Self`): the `Function` is
        // made there, once.
        (
            quote! {
                fn #here() {}
                static #func: ::std::sync::OnceLock<::memento::Function> =
                    ::std::sync::OnceLock::new();
            },
            quote!(#func.get_or_init(|| #new_function)),
            quote!(),
        )
    } else {
        (
            quote! {
                fn #here() {}
                static #func: ::std::sync::LazyLock<::memento::Function> = #make_function;
            },
            quote!(&*#func),
            quote!(),
        )
    };

    let compute = if sig.asyncness.is_some() {
        // The body runs as an async block, awaited in place; a fake return
        // edge gives the block its type for `?` and `return` (as in
        // tracing-attributes).
        let stmts = &block.stmts;
        let fake = format_ident!("__memento_fake_return", span = mixed);
        let store_async = format_ident!("{}_async", store.to_string());
        quote! {
            let #value: #ret = async {
                #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
                if false {
                    let #fake: #body_ret = loop {};
                    return #fake;
                }
                #(#stmts)*
            }
            .await #to_ret;
            {
                #stores
                #output.#store_async(#pending, #value).await
            }
        }
    } else {
        quote! {
            #[allow(clippy::redundant_closure_call)]
            let #value: #ret = (|| -> #body_ret #block)() #to_ret;
            {
                #stores
                #output.#store(#pending, #value)
            }
        }
    };

    if options.refresh.is_some() {
        let refresh_body = refresh_body(
            &function,
            &RefreshParts {
                ret: &ret,
                body_ret: &body_ret,
                to_ret: &to_ret,
                stores: &stores,
                output: &output,
                stored: &stored,
                hit: &hit,
                store: &store,
                is_result,
            },
        );
        // The arguments are moved into the body's closure, which binds
        // them `mut` where the signature did: the function's own bindings
        // need no `mut` (else "variable does not need to be mutable").
        let mut sig = sig.clone();
        for input in &mut sig.inputs {
            if let FnArg::Typed(arg) = input {
                if let Pat::Ident(p) = &mut *arg.pat {
                    p.mutability = None;
                }
            }
        }
        return Ok(quote! {
            #(#attrs)*
            #vis #sig {
                #function_static
                let #memory: &::memento::Memory = #memory_expr;
                #check
                let #value = {
                    #stores
                    #output.lookup_refreshing(#memory, #function_ref, &(#(#key_args)*))
                };
                #refresh_body
            }
            #handle
        });
    }

    let (lookup, lookup_await) = if sig.asyncness.is_some() {
        (quote!(lookup_async), quote!(.await))
    } else {
        (quote!(lookup), quote!())
    };

    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #function_static
            let #memory: &::memento::Memory = #memory_expr;
            #check
            let #pending = match {
                #stores
                #output.#lookup(#memory, #function_ref, &(#(#key_args)*))#lookup_await
            } {
                ::memento::Lookup::Hit(#value) => return #hit,
                ::memento::Lookup::Miss(#pending) => #pending,
            };
            #compute
        }
        #handle
    })
}

/// What [`refresh_body`] needs of the expansion.
struct RefreshParts<'a> {
    ret: &'a Type,
    body_ret: &'a Type,
    to_ret: &'a TokenStream,
    stores: &'a TokenStream,
    output: &'a TokenStream,
    stored: &'a TokenStream,
    hit: &'a TokenStream,
    store: &'a TokenStream,
    is_result: bool,
}

/// The rest of the body with `refresh = "background"`, after the lookup
/// (`Memory::lookup_refreshing`, bound to `__memento_value`). A hit
/// returns at once. Otherwise the arguments are moved into a tuple (each
/// checked `Send + 'static`, spanned to its type), and the original body
/// becomes a `move` closure that takes the tuple apart: called in place on
/// a miss, or given to the refresh's thread when the stored result is
/// expired (the call then returns that result, and needs its arguments no
/// more). Whether the refresh can be spawned is decided by the tuple's
/// type, known here, rather than by the closure's, whose captures the
/// compiler infers only later.
fn refresh_body(function: &ItemFn, parts: &RefreshParts<'_>) -> TokenStream {
    let mixed = Span::mixed_site();
    let value = format_ident!("__memento_value", span = mixed);
    let pending = format_ident!("__memento_pending", span = mixed);
    let compute = format_ident!("__memento_compute", span = mixed);
    let refresh = format_ident!("__memento_refresh", span = mixed);
    let looked = format_ident!("__memento_looked", span = mixed);
    let args = format_ident!("__memento_args", span = mixed);
    let spawner = format_ident!("__memento_spawner", span = mixed);
    let RefreshParts {
        ret,
        body_ret,
        to_ret,
        stores,
        output,
        stored,
        hit,
        store,
        is_result,
    } = parts;
    let block = &function.block;
    let mut checks = TokenStream::new();
    let mut names = Vec::new();
    let mut patterns = Vec::new();
    for input in &function.sig.inputs {
        if let FnArg::Typed(arg) = input {
            if let Pat::Ident(p) = &*arg.pat {
                let (ident, mutability) = (&p.ident, &p.mutability);
                checks.extend(quote_spanned!(ident.span()=>
                    ::memento::__private::refresh_arg(&#ident);
                ));
                names.push(quote!(#ident));
                patterns.push(quote!(#mutability #ident));
            }
        }
    }
    let spawn = if *is_result {
        quote!(spawn_result)
    } else {
        quote!(spawn)
    };
    quote! {
        let #looked = match #value {
            ::memento::Refreshing::Hit(#value) => return #hit,
            #looked => #looked,
        };
        #checks
        let #args = (#(#names,)*);
        let #spawner = ::memento::__private::Spawner::<#stored, _>::of(&#args);
        #[allow(clippy::redundant_closure_call)]
        let #compute = move || -> #ret {
            #[allow(unused_variables, unused_mut)]
            let (#(#patterns,)*) = #args;
            (|| -> #body_ret #block)() #to_ret
        };
        let #pending = match #looked {
            ::memento::Refreshing::Stale(#value, #refresh) => {
                #[allow(unused_imports)]
                use ::memento::__private::{DoesNotSpawn as _, Spawns as _};
                (&&#spawner).#spawn(#refresh, #compute);
                return #hit;
            }
            ::memento::Refreshing::Miss(#pending) => #pending,
            ::memento::Refreshing::Hit(#value) => return #hit,
        };
        let #value: #ret = #compute();
        {
            #stores
            #output.#store(#pending, #value)
        }
    }
}

/// The rules of `refresh = "background"`, each error spanned to the
/// offending token: it needs `expires_after`, a plain `fn` (not `async`,
/// not a method taking `self`: the refresh's thread takes the arguments),
/// and arguments that are owned (no borrowed types).
fn check_refresh(function: &ItemFn, options: &Options, refresh: &syn::LitStr) -> syn::Result<()> {
    let sig = &function.sig;
    if options.expires_after.is_none() {
        return Err(syn::Error::new(
            refresh.span(),
            "refresh = \"background\" recomputes results once they expire, but nothing \
             expires: add expires_after = \"..\" (such as expires_after = \"1h\")",
        ));
    }
    if let Some(asyncness) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            asyncness,
            "refresh = \"background\" is not available on an `async fn`: the refresh runs on \
             a thread of its own, outside any executor; remove `refresh`, or make the function \
             synchronous",
        ));
    }
    if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(syn::Error::new_spanned(
            receiver,
            "refresh = \"background\" is not available on a method taking `self`: the refresh \
             runs on a thread of its own after the call returned, and `self` cannot go there; \
             make it an associated function that takes what it needs as owned arguments",
        ));
    }
    let mut errors: Option<syn::Error> = None;
    let mut error = |e: syn::Error| match &mut errors {
        Some(errors) => errors.combine(e),
        None => errors = Some(e),
    };
    for input in &sig.inputs {
        let FnArg::Typed(arg) = input else { continue };
        let plain = matches!(&*arg.pat, Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none());
        if !plain {
            error(syn::Error::new_spanned(
                &arg.pat,
                "with refresh = \"background\", each argument is a plain name (`x` or \
                 `mut x`): the refresh's thread takes the arguments by name; take the \
                 argument whole and destructure it in the body",
            ));
        }
        if borrowed_part(&arg.ty).is_some() {
            let name = match &*arg.pat {
                Pat::Ident(p) => p.ident.to_string(),
                other => other.to_token_stream().to_string(),
            };
            let e = syn::Error::new_spanned(
                &arg.ty,
                format!(
                    "argument `{name}` is borrowed: with refresh = \"background\", an expired \
                     result is computed again on a thread of its own after the call returned, \
                     which takes the arguments; take an owned value (`String` rather than \
                     `&str`, `Vec<T>` rather than `&[T]`, an `Arc` to share)"
                ),
            );
            error(e);
        }
    }
    errors.map_or(Ok(()), Err)
}

/// Does a type borrow: a reference or a lifetime other than `'static`
/// (those inside a function type, `Fn(&str)` or `fn(&str)`, are its own,
/// and borrow nothing)? The first such part.
fn borrowed_part(ty: &Type) -> Option<TokenStream> {
    use syn::visit::Visit;
    #[derive(Default)]
    struct Find(Option<TokenStream>);
    impl<'ast> Visit<'ast> for Find {
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            match &r.lifetime {
                Some(l) if l.ident == "static" => self.visit_type(&r.elem),
                _ => {
                    if self.0.is_none() {
                        let (and, lifetime) = (&r.and_token, &r.lifetime);
                        self.0 = Some(quote!(#and #lifetime));
                    }
                }
            }
        }
        fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
            if l.ident != "static" && self.0.is_none() {
                self.0 = Some(l.to_token_stream());
            }
        }
        fn visit_type_bare_fn(&mut self, _: &'ast syn::TypeBareFn) {}
        fn visit_bound_lifetimes(&mut self, _: &'ast syn::BoundLifetimes) {}
        fn visit_parenthesized_generic_arguments(
            &mut self,
            _: &'ast syn::ParenthesizedGenericArguments,
        ) {
        }
    }
    let mut find = Find::default();
    find.visit_type(ty);
    find.0
}

fn has_receiver(function: &ItemFn) -> bool {
    matches!(function.sig.inputs.first(), Some(FnArg::Receiver(_)))
}

/// Does the function name `Self` (so it sits in an `impl` block, where no
/// struct can be written)?
fn mentions_self(function: &ItemFn) -> bool {
    fn walk(stream: TokenStream) -> bool {
        stream.into_iter().any(|tt| match tt {
            proc_macro2::TokenTree::Ident(i) => i == "Self",
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(function.sig.to_token_stream()) || walk(function.block.to_token_stream())
}

/// The handle: a struct with the function's name (structs with braces live
/// in the type namespace, functions in the value namespace, so both fit)
/// whose associated functions are the handle's operations. A struct, not a
/// module: its `impl` sees what the function sees, even inside a block.
fn handle_module(
    function: &ItemFn,
    ret: &Type,
    stored: &TokenStream,
    key_args: &[TokenStream],
    memory_expr: &TokenStream,
    make_function: &TokenStream,
) -> TokenStream {
    let vis = &function.vis;
    let sig = &function.sig;
    let name = &sig.ident;
    let generics = &sig.generics;
    let where_clause = &generics.where_clause;
    let inputs = &sig.inputs;
    // The same parameters under plain names, to pass them on.
    let mixed = Span::mixed_site();
    let mut pass_inputs = Vec::new();
    let mut pass_args = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        if let FnArg::Typed(arg) = input {
            let ident = format_ident!("__memento_arg{}", i, span = mixed);
            let ty = &arg.ty;
            pass_inputs.push(quote!(#ident: #ty));
            pass_args.push(quote!(#ident));
        }
    }
    let impl_trait_args = sig.inputs.iter().any(|input| {
        matches!(input, FnArg::Typed(arg) if arg.ty.to_token_stream().into_iter().any(|t| matches!(&t, proc_macro2::TokenTree::Ident(i) if i == "impl")))
    });
    let turbofish = {
        let params: Vec<TokenStream> = generics
            .params
            .iter()
            .filter_map(|p| match p {
                GenericParam::Type(t) => Some(t.ident.to_token_stream()),
                GenericParam::Const(c) => Some(c.ident.to_token_stream()),
                GenericParam::Lifetime(_) => None,
            })
            .collect();
        if params.is_empty() || impl_trait_args {
            quote!()
        } else {
            quote!(::<#(#params),*>)
        }
    };
    let asyncness = &sig.asyncness;
    let call = if asyncness.is_some() {
        quote!(#name #turbofish(#(#pass_args),*).await)
    } else {
        quote!(#name #turbofish(#(#pass_args),*))
    };
    let doc = format!(
        "Cache handle of [`{name}`](fn@{name}) (generated by `#[memento::cache]`): \
         see `memento::handle`."
    );
    quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #name {}

        #[allow(unused_variables, unused_mut, private_interfaces, private_bounds, dead_code, clippy::all)]
        impl #name {
            /// The cached function's identity and fingerprint.
            pub fn function() -> &'static ::memento::Function {
                fn __memento_here() {}
                static FUNCTION: ::std::sync::LazyLock<::memento::Function> = #make_function;
                &FUNCTION
            }

            /// The cache it uses.
            pub fn memory() -> ::memento::Memory {
                let memory: &::memento::Memory = #memory_expr;
                memory.clone()
            }

            /// Removes every stored result of the function; returns how many.
            pub fn clear() -> ::memento::Result<usize> {
                Self::memory().clear_function(Self::function())
            }

            /// Is a result for these arguments stored? Computes nothing.
            pub fn check_call_in_cache #generics (#inputs) -> bool #where_clause {
                #[allow(unused_imports)]
                use ::memento::__private::{DoesNotStore as _, Stores as _};
                (&&::memento::__private::Output::<#stored>::NEW)
                    .contains(&Self::memory(), Self::function(), &(#(#key_args)*))
            }

            /// Computes the result again and overwrites the stored one.
            pub #asyncness fn call_forced #generics (#(#pass_inputs),*) -> #ret #where_clause {
                ::memento::__private::next_call(true, false);
                #call
            }

            /// Calls the function and says whether the value came from the cache.
            pub #asyncness fn call_with_outcome #generics (#(#pass_inputs),*) -> ::memento::Outcome<#ret> #where_clause {
                let start = ::std::time::Instant::now();
                ::memento::__private::next_call(false, true);
                let value = #call;
                let hit = ::memento::__private::last_call().is_some_and(|(hit, _)| hit);
                let mut outcome = ::memento::Outcome::new(value, hit, start.elapsed());
                outcome.why = ::memento::__private::last_why();
                outcome
            }

            /// Finds or computes the result and returns a handle to it instead.
            pub #asyncness fn call_and_shelve #generics (#(#pass_inputs),*) -> ::memento::StoredResult<#stored> #where_clause {
                ::memento::__private::next_call(false, true);
                let _ = #call;
                let key = ::memento::__private::last_call().and_then(|(_, key)| key);
                ::memento::StoredResult::__new(&Self::memory(), Self::function(), key)
            }
        }
    }
}

/// Refuses what a cached function cannot be, each error spanned to the
/// offending token.
fn check_signature(function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new_spanned(
            constness,
            "#[memento::cache] cannot be used on a `const fn`: a cached function reads and \
             writes files at run time; remove `const`, or remove the attribute",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            variadic,
            "#[memento::cache] cannot cache a variadic function",
        ));
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Type::ImplTrait(_) = &**ty {
            return Err(syn::Error::new_spanned(
                ty,
                "#[memento::cache] needs a concrete output type that implements Serialize and \
                 DeserializeOwned: a stored result cannot be decoded into `impl Trait`",
            ));
        }
    }
    Ok(())
}

/// The bindings that go into the key, in argument order: every identifier an
/// argument pattern binds, less the ignored ones. (A function can only
/// depend on what its patterns bind, so this is the whole input.)
fn keyed_bindings(function: &ItemFn, options: &Options) -> syn::Result<Vec<Ident>> {
    let mut keyed = Vec::new();
    let mut all = Vec::new();
    for input in &function.sig.inputs {
        let arg = match input {
            FnArg::Receiver(receiver) => {
                let this = Ident::new("self", receiver.self_token.span);
                let ignored = options.ignore.iter().any(|i| i == "self");
                if receiver.mutability.is_some() && receiver.reference.is_some() && !ignored {
                    return Err(syn::Error::new_spanned(
                        receiver,
                        "`&mut self`: a cached method must be pure, and on a hit its body does \
                         not run, so the mutation would be lost; take `&self`, or, if the \
                         mutation is not part of the result, leave `self` out of the key with \
                         #[memento::cache(ignore(self))]",
                    ));
                }
                all.push(this.clone());
                if !ignored {
                    keyed.push(this);
                }
                continue;
            }
            FnArg::Typed(arg) => arg,
        };
        let mut bound = Vec::new();
        bindings(&arg.pat, &mut bound);
        let ignored = |ident: &Ident| options.ignore.iter().any(|i| i == ident);
        let is_mut_ref = matches!(&*arg.ty, Type::Reference(r) if r.mutability.is_some());
        if is_mut_ref && !bound.iter().all(ignored) {
            let Type::Reference(r) = &*arg.ty else {
                unreachable!()
            };
            let name = bound
                .first()
                .map(|i| i.to_string())
                .unwrap_or_else(|| "_".to_string());
            let (and, mutability) = (&r.and_token, &r.mutability);
            return Err(syn::Error::new_spanned(
                quote!(#and #mutability),
                format!(
                    "argument `{name}` is `&mut`: a cached function must be pure, and on a hit \
                     its body does not run, so the mutation would be lost; take the argument by \
                     value or by `&`, or, if the mutation is not part of the result, leave it \
                     out of the key with #[memento::cache(ignore({name}))]"
                ),
            ));
        }
        for ident in bound {
            all.push(ident.clone());
            if !ignored(&ident) {
                keyed.push(ident);
            }
        }
    }
    for ignored in &options.ignore {
        if !all.iter().any(|a| a == ignored) {
            return Err(syn::Error::new_spanned(
                ignored,
                format!("`ignore({ignored})`: this function has no argument named `{ignored}`"),
            ));
        }
    }
    Ok(keyed)
}

fn bindings(pat: &Pat, out: &mut Vec<Ident>) {
    match pat {
        Pat::Ident(p) => {
            out.push(p.ident.clone());
            if let Some((_, sub)) = &p.subpat {
                bindings(sub, out);
            }
        }
        Pat::Tuple(t) => t.elems.iter().for_each(|p| bindings(p, out)),
        Pat::TupleStruct(t) => t.elems.iter().for_each(|p| bindings(p, out)),
        Pat::Struct(s) => s.fields.iter().for_each(|f| bindings(&f.pat, out)),
        Pat::Slice(s) => s.elems.iter().for_each(|p| bindings(p, out)),
        Pat::Reference(r) => bindings(&r.pat, out),
        Pat::Paren(p) => bindings(&p.pat, out),
        Pat::Type(t) => bindings(&t.pat, out),
        // Every alternative binds the same names.
        Pat::Or(o) => {
            if let Some(first) = o.cases.first() {
                bindings(first, out);
            }
        }
        _ => {}
    }
}

/// An output type whose last path segment is `Result` counts as one.
/// `T` for `Mapped<T>`; with `is_result`, also `Result<T, E>` for
/// `Result<Mapped<T>, E>`.
fn unmapped(ty: &Type, is_result: bool) -> Option<Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    if last.ident == "Mapped" {
        return match args.args.first()? {
            syn::GenericArgument::Type(inner) if args.args.len() == 1 => Some(inner.clone()),
            _ => None,
        };
    }
    if is_result {
        let mut outer = path.clone();
        let last = outer.path.segments.last_mut()?;
        if let syn::PathArguments::AngleBracketed(args) = &mut last.arguments {
            if let Some(syn::GenericArgument::Type(ok)) = args.args.first_mut() {
                *ok = unmapped(ok, false)?;
                return Some(Type::Path(outer));
            }
        }
    }
    None
}

/// The type of what is stored: the output type, or the `Ok` type of a
/// `Result` output. Written with the return type's spans (the first token's
/// and the last's), so that an error about it points at the return type.
fn stored_type(ret: &Type, is_result: bool) -> TokenStream {
    if !is_result {
        return ret.to_token_stream();
    }
    let (first, last) = outer_spans(ret);
    let open = quote_spanned!(first=> <);
    let close = quote_spanned!(last=> as ::memento::__private::ResultOk>::Ok);
    quote!(#open #ret #close)
}

/// The spans of a type's first token and last token (the call site for
/// the `()` written for a function without `->`).
fn outer_spans(ty: &Type) -> (Span, Span) {
    let span = |tree: Option<&TokenTree>, open: bool| match tree {
        Some(TokenTree::Group(g)) if open => g.span_open(),
        Some(TokenTree::Group(g)) => g.span_close(),
        Some(tree) => tree.span(),
        None => Span::call_site(),
    };
    let trees: Vec<TokenTree> = ty.to_token_stream().into_iter().collect();
    (span(trees.first(), true), span(trees.last(), false))
}

fn is_result_type(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        Type::Paren(p) => is_result_type(&p.elem),
        Type::Group(g) => is_result_type(&g.elem),
        _ => false,
    }
}
