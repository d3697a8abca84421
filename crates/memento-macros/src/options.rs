//! The attribute's options: `memory = EXPR`, `ignore(a, b)`,
//! `version = "2"`, `result = true|false`, `keep_versions`,
//! `expires_after = "7d"`, `validate = path`, `compress = "zstd"`,
//! `mmap`, `handle = false`, `depends(helper, module::helper)`,
//! `refresh = "background"`, `min_duration = "100ms"`.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{Expr, Ident, Lit, LitBool, LitStr};

#[derive(Default)]
pub(crate) struct Options {
    pub(crate) memory: Option<Expr>,
    pub(crate) ignore: Vec<Ident>,
    pub(crate) version: Option<String>,
    pub(crate) result: Option<bool>,
    pub(crate) keep_versions: bool,
    pub(crate) expires_after: Option<(std::time::Duration, proc_macro2::Span)>,
    /// `min_duration = "100ms"`: quicker results are not stored.
    pub(crate) min_duration: Option<(std::time::Duration, proc_macro2::Span)>,
    pub(crate) validate: Option<Expr>,
    pub(crate) handle: Option<bool>,
    pub(crate) compress: Option<LitStr>,
    /// `mmap`: the span of the word, for errors.
    pub(crate) mmap: Option<proc_macro2::Span>,
    /// `depends(a, m::b)`: `#[memento::tracked]` helpers the body calls.
    pub(crate) depends: Vec<syn::Path>,
    /// `refresh = "background"`: the literal, for errors.
    pub(crate) refresh: Option<LitStr>,
}

pub(crate) fn parse(attr: TokenStream) -> syn::Result<Options> {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("memory") {
            if options.memory.is_some() {
                return Err(meta.error("`memory` is given twice"));
            }
            options.memory = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("version") {
            if options.version.is_some() {
                return Err(meta.error("`version` is given twice"));
            }
            let lit: Lit = meta.value()?.parse()?;
            options.version = Some(match lit {
                Lit::Str(s) => s.value(),
                Lit::Int(i) => i.base10_digits().to_string(),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "`version` takes a string, such as version = \"2\"",
                    ))
                }
            });
        } else if meta.path.is_ident("ignore") {
            meta.parse_nested_meta(|inner| {
                let ident = inner.path.get_ident().cloned().ok_or_else(|| {
                    inner.error(
                        "`ignore(..)` takes argument names, such as ignore(verbose, progress)",
                    )
                })?;
                options.ignore.push(ident);
                Ok(())
            })?;
        } else if meta.path.is_ident("keep_versions") {
            options.keep_versions = true;
        } else if meta.path.is_ident("expires_after") {
            // Checked here, so that a bad duration is an error at the
            // literal, not a panic at run time.
            let text: LitStr = meta.value()?.parse()?;
            let ttl = humantime::parse_duration(text.value().trim()).map_err(|e| {
                syn::Error::new(
                    text.span(),
                    format!(
                        "expires_after = {:?} is not a duration ({e}); write a number and a \
                         unit, such as \"7d\", \"12h\" or \"1h 30m\"",
                        text.value()
                    ),
                )
            })?;
            options.expires_after = Some((ttl, text.span()));
        } else if meta.path.is_ident("min_duration") {
            let text: LitStr = meta.value()?.parse()?;
            let least = humantime::parse_duration(text.value().trim()).map_err(|e| {
                syn::Error::new(
                    text.span(),
                    format!(
                        "min_duration = {:?} is not a duration ({e}); write a number and a \
                         unit, such as \"100ms\", \"2s\" or \"1m\"",
                        text.value()
                    ),
                )
            })?;
            options.min_duration = Some((least, text.span()));
        } else if meta.path.is_ident("validate") {
            options.validate = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("compress") {
            options.compress = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("mmap") {
            options.mmap = Some(
                meta.path
                    .get_ident()
                    .map_or_else(proc_macro2::Span::call_site, proc_macro2::Ident::span),
            );
        } else if meta.path.is_ident("handle") {
            let b: LitBool = meta.value()?.parse()?;
            options.handle = Some(b.value);
        } else if meta.path.is_ident("depends") {
            crate::depends::parse(meta, &mut options.depends)?;
        } else if meta.path.is_ident("refresh") {
            let text: LitStr = meta.value()?.parse()?;
            if text.value() != "background" {
                return Err(syn::Error::new(
                    text.span(),
                    format!(
                        "refresh = {:?} is not a refresh mode; the one there is, \
                         refresh = \"background\", serves an expired result at once and \
                         computes it again on a thread of its own",
                        text.value()
                    ),
                ));
            }
            options.refresh = Some(text);
        } else if meta.path.is_ident("result") {
            let b: LitBool = meta.value()?.parse()?;
            options.result = Some(b.value);
        } else {
            return Err(meta.error(
                "unknown option of #[memento::cache]; the options are memory = EXPR, \
                 ignore(arg, ..), version = \"..\", result = true|false, keep_versions, \
                 expires_after = \"..\", min_duration = \"..\", validate = path::to::fn, compress = \"lz4\"|\"zstd\", mmap, \
                 handle = false, depends(helper, ..) and refresh = \"background\"",
            ));
        }
        Ok(())
    });
    parser.parse2(attr)?;
    Ok(options)
}
