//! Derive macros of [actix-cpg](https://docs.rs/actix-cpg).
//!
//! Use them through the library, with its `derive` feature, as serde's
//! derives are used through serde:
//!
//! ```toml
//! [dependencies]
//! actix-cpg = { version = "0.1", features = ["derive"] }
//! ```
//!
//! `actix_cpg::RemoteMessage` then names both the trait and its derive.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::{parse_macro_input, DeriveInput, Error, Expr, Lit, LitStr};

/// Implements `actix_cpg::RemoteMessage` with the wire tag given in
/// `#[remote(tag = "...")]`.
///
/// The tag names the type on the wire, so it must stay the same across
/// versions of the program and be unique among the message types a group
/// uses: choose it as you would a protocol name (`"app.Add.v1"`), not from
/// the Rust path, which moves when code is reorganised. The type still
/// derives actix's `Message` and serde's `Serialize` and `Deserialize`, as
/// the trait requires.
///
/// ```
/// use actix::Message;
/// use actix_cpg::RemoteMessage;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Message, Serialize, Deserialize, RemoteMessage)]
/// #[rtype(result = "u64")]
/// #[remote(tag = "app.Add.v1")]
/// struct Add(u64);
///
/// assert_eq!(Add::TYPE_TAG, "app.Add.v1");
/// ```
///
/// The generated impl names the library as `::actix_cpg`: depend on it
/// under that name.
///
/// # Refused at compile time
///
/// Each of these is a `compile_error!` pointing at the offending tokens.
///
/// No tag:
///
/// ```compile_fail
/// # use actix::Message;
/// # use actix_cpg::RemoteMessage;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Message, Serialize, Deserialize, RemoteMessage)]
/// #[rtype(result = "u64")]
/// struct Add(u64);
/// ```
///
/// Two tags, in one attribute or in two:
///
/// ```compile_fail
/// # use actix::Message;
/// # use actix_cpg::RemoteMessage;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Message, Serialize, Deserialize, RemoteMessage)]
/// #[rtype(result = "u64")]
/// #[remote(tag = "app.Add.v1", tag = "app.Add.v2")]
/// struct Add(u64);
/// ```
///
/// ```compile_fail
/// # use actix::Message;
/// # use actix_cpg::RemoteMessage;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Message, Serialize, Deserialize, RemoteMessage)]
/// #[rtype(result = "u64")]
/// #[remote(tag = "app.Add.v1")]
/// #[remote(tag = "app.Add.v2")]
/// struct Add(u64);
/// ```
///
/// An empty tag:
///
/// ```compile_fail
/// # use actix::Message;
/// # use actix_cpg::RemoteMessage;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Message, Serialize, Deserialize, RemoteMessage)]
/// #[rtype(result = "u64")]
/// #[remote(tag = "")]
/// struct Add(u64);
/// ```
///
/// A tag that is not a string literal (a constant is refused too: the tag
/// is read by the macro, before constants have values):
///
/// ```compile_fail
/// # use actix::Message;
/// # use actix_cpg::RemoteMessage;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Message, Serialize, Deserialize, RemoteMessage)]
/// #[rtype(result = "u64")]
/// #[remote(tag = 1)]
/// struct Add(u64);
/// ```
///
/// A key other than `tag`:
///
/// ```compile_fail
/// # use actix::Message;
/// # use actix_cpg::RemoteMessage;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Message, Serialize, Deserialize, RemoteMessage)]
/// #[rtype(result = "u64")]
/// #[remote(tag = "app.Add.v1", version = 2)]
/// struct Add(u64);
/// ```
///
/// A generic type: one tag would name every instantiation on the wire
/// (`Wrapped<u32>` and `Wrapped<String>` alike), and a host could not tell
/// which one a payload holds. Implement the trait by hand for each
/// concrete type, each with its own tag:
///
/// ```compile_fail
/// # use actix::Message;
/// # use actix_cpg::RemoteMessage;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Message, Serialize, Deserialize, RemoteMessage)]
/// #[rtype(result = "()")]
/// #[remote(tag = "app.Wrapped.v1")]
/// struct Wrapped<T>(T);
/// ```
#[proc_macro_derive(RemoteMessage, attributes(remote))]
pub fn derive_remote_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_remote_message(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

const TAG_EXAMPLE: &str = "#[remote(tag = \"app.Add.v1\")]";

fn expand_remote_message(input: &DeriveInput) -> syn::Result<TokenStream2> {
    if !input.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &input.generics,
            "RemoteMessage cannot be derived for a generic type: one wire tag would name \
             every instantiation, and a host could not tell them apart; implement \
             `actix_cpg::RemoteMessage` by hand for each concrete type, each with its own tag",
        ));
    }
    let tag = wire_tag(input)?;
    let ident = &input.ident;
    Ok(quote! {
        #[automatically_derived]
        impl ::actix_cpg::RemoteMessage for #ident {
            const TYPE_TAG: &'static str = #tag;
        }
    })
}

/// The one `tag` of the type's `#[remote(...)]` attributes.
fn wire_tag(input: &DeriveInput) -> syn::Result<LitStr> {
    let mut tag: Option<LitStr> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("remote")) {
        attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident("tag") {
                return Err(meta.error(format!(
                    "unknown key in #[remote(...)]: the only key is `tag`, as in {TAG_EXAMPLE}"
                )));
            }
            let value: Expr = meta.value()?.parse()?;
            let lit = string_literal(value)?;
            if tag.is_some() {
                return Err(Error::new_spanned(
                    &meta.path,
                    "duplicate `tag`: a message type has exactly one wire tag",
                ));
            }
            if lit.value().is_empty() {
                return Err(Error::new_spanned(
                    &lit,
                    "the wire tag is empty: name the type for the wire, e.g. \"app.Add.v1\"",
                ));
            }
            tag = Some(lit);
            Ok(())
        })?;
    }
    tag.ok_or_else(|| {
        Error::new_spanned(
            &input.ident,
            format!(
                "#[derive(RemoteMessage)] needs the type's wire tag: add {TAG_EXAMPLE} \
                 (stable across versions, unique in the group)"
            ),
        )
    })
}

fn string_literal(value: Expr) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        // What a `macro_rules!` expansion hands over for `$tag:expr`.
        Expr::Group(group) => string_literal(*group.expr),
        other => Err(Error::new_spanned(
            other,
            format!(
                "`tag` takes a string literal, as in {TAG_EXAMPLE} (the macro reads it before \
                 constants have values)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn error_of(input: DeriveInput) -> String {
        match expand_remote_message(&input) {
            Ok(tokens) => panic!("expected an error, got {tokens}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_tag_becomes_the_type_tag() {
        let out = expand_remote_message(&parse_quote! {
            #[derive(Message)]
            #[remote(tag = "app.Add.v1")]
            struct Add(u64);
        })
        .unwrap();
        let expected = quote! {
            #[automatically_derived]
            impl ::actix_cpg::RemoteMessage for Add {
                const TYPE_TAG: &'static str = "app.Add.v1";
            }
        };
        assert_eq!(out.to_string(), expected.to_string());
    }

    #[test]
    fn other_attributes_and_enums_are_fine() {
        let out = expand_remote_message(&parse_quote! {
            #[rtype(result = "()")]
            #[remote(tag = "app.Op.v2")]
            #[serde(rename = "op")]
            enum Op { A, B(u8) }
        })
        .unwrap();
        assert!(out.to_string().contains("\"app.Op.v2\""), "{out}");
    }

    #[test]
    fn a_missing_tag_says_how_to_write_one() {
        let e = error_of(parse_quote! { struct Add(u64); });
        assert!(e.contains("needs the type's wire tag"), "{e}");
        assert!(e.contains(TAG_EXAMPLE), "{e}");
        let e = error_of(parse_quote! { #[remote()] struct Add(u64); });
        assert!(e.contains("needs the type's wire tag"), "{e}");
    }

    #[test]
    fn a_second_tag_is_refused_in_one_attribute_or_two() {
        let e = error_of(parse_quote! {
            #[remote(tag = "a", tag = "b")]
            struct Add(u64);
        });
        assert!(e.contains("duplicate `tag`"), "{e}");
        let e = error_of(parse_quote! {
            #[remote(tag = "a")]
            #[remote(tag = "b")]
            struct Add(u64);
        });
        assert!(e.contains("duplicate `tag`"), "{e}");
    }

    #[test]
    fn an_empty_tag_is_refused() {
        let e = error_of(parse_quote! { #[remote(tag = "")] struct Add(u64); });
        assert!(e.contains("the wire tag is empty"), "{e}");
    }

    #[test]
    fn a_tag_must_be_a_string_literal() {
        for input in [
            parse_quote! { #[remote(tag = 1)] struct Add(u64); },
            parse_quote! { #[remote(tag = TAG)] struct Add(u64); },
            parse_quote! { #[remote(tag = b"app")] struct Add(u64); },
        ] {
            let e = error_of(input);
            assert!(e.contains("`tag` takes a string literal"), "{e}");
        }
    }

    #[test]
    fn malformed_attributes_are_errors() {
        let e = error_of(parse_quote! { #[remote(name = "a")] struct Add(u64); });
        assert!(e.contains("the only key is `tag`"), "{e}");
        let e = error_of(parse_quote! { #[remote(tag)] struct Add(u64); });
        assert!(e.contains("expected `=`"), "{e}");
        let e = error_of(parse_quote! { #[remote] struct Add(u64); });
        assert!(!e.is_empty());
    }

    #[test]
    fn generic_types_are_refused() {
        for input in [
            parse_quote! { #[remote(tag = "a")] struct Wrapped<T>(T); },
            parse_quote! { #[remote(tag = "a")] struct Borrowed<'a>(&'a str); },
            parse_quote! { #[remote(tag = "a")] struct Sized<const N: usize>([u8; N]); },
        ] {
            let e = error_of(input);
            assert!(e.contains("cannot be derived for a generic type"), "{e}");
        }
    }
}
