//! The code fingerprint: blake3 over a function's token trees.
//!
//! What counts: token kinds, identifier and literal text, punctuation
//! characters and delimiters. What does not: spans (so moving the function
//! in its file or reformatting it changes nothing), the spacing between
//! punctuation (`x=-1` and `x = -1` are the same code), comments (they are
//! not tokens) and doc comments, outer or inner (`#[doc = ..]` and
//! `#![doc = ..]` attributes are skipped).

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// Version of this walk; part of every fingerprint.
const FINGERPRINT_VERSION: &[u8] = b"memento code fingerprint v1";

/// Fingerprints several token streams in order (attribute options,
/// signature, body).
pub(crate) fn fingerprint(parts: &[TokenStream]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(FINGERPRINT_VERSION);
    for part in parts {
        h.update(&[0xF0]);
        walk(part.clone(), &mut h);
        h.update(&[0xF1]);
    }
    *h.finalize().as_bytes()
}

fn text(h: &mut blake3::Hasher, tag: u8, s: &str) {
    h.update(&[tag]);
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn is_doc_attribute(group: &proc_macro2::Group) -> bool {
    group.delimiter() == Delimiter::Bracket
        && matches!(group.stream().into_iter().next(), Some(TokenTree::Ident(i)) if i == "doc")
}

fn walk(stream: TokenStream, h: &mut blake3::Hasher) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        if let TokenTree::Punct(p) = &tokens[i] {
            if p.as_char() == '#' {
                let mut j = i + 1;
                if matches!(tokens.get(j), Some(TokenTree::Punct(q)) if q.as_char() == '!') {
                    j += 1;
                }
                if let Some(TokenTree::Group(g)) = tokens.get(j) {
                    if is_doc_attribute(g) {
                        i = j + 1;
                        continue;
                    }
                }
            }
        }
        match &tokens[i] {
            TokenTree::Group(g) => {
                let delimiter = match g.delimiter() {
                    Delimiter::Parenthesis => 1,
                    Delimiter::Brace => 2,
                    Delimiter::Bracket => 3,
                    Delimiter::None => 4,
                };
                h.update(&[0x10, delimiter]);
                walk(g.stream(), h);
                h.update(&[0x11, delimiter]);
            }
            TokenTree::Ident(ident) => text(h, 0x20, &ident.to_string()),
            TokenTree::Punct(p) => {
                let mut buf = [0u8; 4];
                text(h, 0x30, p.as_char().encode_utf8(&mut buf));
            }
            TokenTree::Literal(lit) => text(h, 0x40, &lit.to_string()),
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(code: &str) -> [u8; 32] {
        fingerprint(&[code.parse().unwrap()])
    }

    #[test]
    fn comments_and_formatting_do_not_count() {
        let a = fp("fn f(x: f64) -> f64 { let y = x * 2.0; y.sin() }");
        let b =
            fp("fn f(x: f64)->f64 {\n    // double it\n    let y = x*2.0; /* then */ y.sin()\n}");
        let c = fp("fn f(x: f64) -> f64 { #![doc = \"inner\"] let y = x * 2.0; y.sin() }");
        let d = fp("/// Outer doc.\nfn f(x: f64) -> f64 { let y = x * 2.0; y.sin() }");
        let e = fp("fn f(x: f64) -> f64 { let y=x*2.0; y . sin() }");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
        assert_eq!(a, e);
        assert_eq!(fp("let x=-1;"), fp("let x = -1;"));
    }

    #[test]
    fn real_edits_count() {
        let base = fp("fn f(x: f64) -> f64 { let y = x * 2.0; y.sin() }");
        for edited in [
            "fn f(x: f64) -> f64 { let y = x * 3.0; y.sin() }",
            "fn f(x: f64) -> f64 { let y = x * 2.0; y.cos() }",
            "fn f(x: f64) -> f64 { let y = x + 2.0; y.sin() }",
            "fn f(x: f32) -> f64 { let y = x * 2.0; y.sin() }",
            "fn f(x: f64) -> f64 { let y = (x * 2.0); y.sin() }",
            "fn f(x: f64) -> f64 { let y = x * 2.0; y.sin(); }",
            "fn f(x: f64) -> f64 { let z = x * 2.0; z.sin() }",
            "fn f(x: f64) -> f64 { let y = x * 2.00; y.sin() }",
            "fn f(x: f64) -> f64 { #[allow(unused)] let y = x * 2.0; y.sin() }",
        ] {
            assert_ne!(base, fp(edited), "{edited}");
        }
    }

    #[test]
    fn parts_are_delimited() {
        let a: TokenStream = "a b".parse().unwrap();
        let b: TokenStream = "c".parse().unwrap();
        let ab: TokenStream = "a".parse().unwrap();
        let bb: TokenStream = "b c".parse().unwrap();
        assert_ne!(fingerprint(&[a, b]), fingerprint(&[ab, bb]));
    }
}
