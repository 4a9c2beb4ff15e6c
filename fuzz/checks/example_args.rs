//! What the `example_args` fuzz target checks: the example servers' command
//! line (`examples/common/mod.rs`, `Args::parse`). Included with `#[path]` by
//! the fuzz target and by the stable regression test `tests/fuzz_regressions.rs`,
//! both of which also include the examples' `common` module as `crate::common`
//! and `checks/args_input.rs` as `crate::args_input`.
//!
//! The properties: parsing never panics; `--help` is only answered when a
//! help flag was given; an error says something; and arguments that parse
//! describe themselves (written back as flags, they parse to the same
//! thing), and `--help` after them asks for the help.

use crate::args_input::{any_would_resolve, split_args};
use crate::common::Args;

/// The fuzz target's body.
pub(crate) fn example_args(data: &[u8]) {
    let args = split_args(data);
    if any_would_resolve(&args) {
        return;
    }
    match Args::parse(args.clone().into_iter()) {
        Ok(None) => assert!(
            args.iter()
                .any(|a| ["--help", "-h"]
                    .contains(&a.split_once('=').map_or(a.as_str(), |(f, _)| f))),
            "help answered without a help flag: {args:?}"
        ),
        Ok(Some(parsed)) => {
            let again = Args::parse(flags_of(&parsed).into_iter());
            let again = match again {
                Ok(Some(again)) => again,
                other => panic!("{parsed:?} written back as flags parsed as {other:?}"),
            };
            assert_eq!(
                format!("{again:?}"),
                format!("{parsed:?}"),
                "round trip of {args:?}"
            );
            let mut with_help = args.clone();
            with_help.push("--help".to_owned());
            assert!(
                matches!(Args::parse(with_help.into_iter()), Ok(None)),
                "{args:?} --help did not ask for the help"
            );
        }
        Err(message) => assert!(!message.is_empty(), "an empty error for {args:?}"),
    }
}

/// `args` as the flags that say the same, each value its own argument.
/// Every field of `Args` is written: a flag added to the examples must be
/// added here too (the round trip fails on the first input that uses it).
fn flags_of(args: &Args) -> Vec<String> {
    let path = |p: &std::path::Path| p.to_str().expect("parsed from a String").to_owned();
    let mut flags = Vec::new();
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        flags.extend([
            "--cert".to_owned(),
            path(cert),
            "--key".to_owned(),
            path(key),
        ]);
    }
    for dir in &args.cert_dirs {
        flags.extend(["--cert-dir".to_owned(), path(dir)]);
    }
    if let Some(file) = &args.client_ca {
        flags.extend(["--client-ca".to_owned(), path(file)]);
    }
    if let Some(dir) = &args.client_ca_dir {
        flags.extend(["--client-ca-dir".to_owned(), path(dir)]);
    }
    flags.extend([
        "--interval-ms".to_owned(),
        args.interval.as_millis().to_string(),
        "--listen".to_owned(),
        args.listen.to_string(),
        "--detector".to_owned(),
        args.detector.to_string(),
        "--handshake-timeout-ms".to_owned(),
        args.handshake_timeout.as_millis().to_string(),
        "--events".to_owned(),
        if args.events { "on" } else { "off" }.to_owned(),
    ]);
    for crl in &args.crls {
        flags.extend(["--crl".to_owned(), path(crl)]);
    }
    if let Some(file) = &args.key_passphrase_file {
        flags.extend(["--key-passphrase-file".to_owned(), path(file)]);
    }
    flags
}
