//! `#[rthreads::main]`: the only set-up line an rthreads program needs.

use proc_macro::TokenStream;
use quote::quote;
use syn::{ItemFn, parse_macro_input};

/// Makes `main` the entry point of an rthreads cluster.
///
/// It installs the shared-heap allocator as the global allocator, starts (or joins) the cluster,
/// runs the body of `main` on node 0 only, and when it returns shuts every node down; the process
/// exits with node 0's exit code. `main` may return anything that implements
/// `std::process::Termination`, as usual.
///
/// `#[rthreads::main(nodes = 8)]` sets how many nodes an embedded cluster has when
/// `RTHREADS_NODES` is not set (default 4). `#[rthreads::main(protocol = "lrc")]` picks the
/// coherence protocol when `RTHREADS_PROTOCOL` is not set: `"sc"` (sequentially consistent, the
/// default) or `"lrc"` (release consistent, multiple writers). Both may be given, separated by a
/// comma.
///
/// # Examples
/// ```text
/// #[rthreads::main]
/// fn main() {
///     let h = rthreads::spawn(|| rthreads::current_node());
///     println!("ran on node {}", h.join().unwrap());
/// }
/// ```
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (nodes, protocol) = match parse_args(attr) {
        Ok(n) => n,
        Err(e) => return e.to_compile_error().into(),
    };
    let f = parse_macro_input!(item as ItemFn);
    if f.sig.ident != "main" || !f.sig.inputs.is_empty() || f.sig.asyncness.is_some() {
        return syn::Error::new_spanned(&f.sig, "#[rthreads::main] goes on `fn main()`")
            .to_compile_error()
            .into();
    }
    let attrs = &f.attrs;
    let vis = &f.vis;
    let output = &f.sig.output;
    let body = &f.block;
    quote! {
        #[global_allocator]
        static __RTHREADS_ALLOC: ::rthreads::SharedAlloc = ::rthreads::SharedAlloc;

        #(#attrs)*
        #vis fn main() -> ::std::process::ExitCode {
            fn __rthreads_body() #output #body
            ::rthreads::__private::run_main_with(#nodes, #protocol, __rthreads_body)
        }
    }
    .into()
}

/// `nodes = N` and `protocol = "sc" | "lrc"`, each optional (defaults: 4, "sc").
fn parse_args(attr: TokenStream) -> syn::Result<(u16, String)> {
    let (mut nodes, mut protocol) = (4u16, "sc".to_owned());
    if attr.is_empty() {
        return Ok((nodes, protocol));
    }
    let parser = syn::punctuated::Punctuated::<syn::MetaNameValue, syn::Token![,]>::parse_terminated;
    let args = syn::parse::Parser::parse(parser, attr)?;
    for nv in args {
        if nv.path.is_ident("nodes") {
            match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(n), .. }) => {
                    let n: u16 = n.base10_parse()?;
                    if n == 0 {
                        return Err(syn::Error::new_spanned(n, "a cluster needs at least one node"));
                    }
                    nodes = n;
                }
                other => return Err(syn::Error::new_spanned(other, "expected an integer: `nodes = 8`")),
            }
        } else if nv.path.is_ident("protocol") {
            match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(p), .. })
                    if p.value() == "sc" || p.value() == "lrc" =>
                {
                    protocol = p.value();
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "expected `protocol = \"sc\"` or `protocol = \"lrc\"`",
                    ));
                }
            }
        } else {
            return Err(syn::Error::new_spanned(
                &nv.path,
                "the arguments are `nodes = N` and `protocol = \"sc\" | \"lrc\"`",
            ));
        }
    }
    Ok((nodes, protocol))
}
