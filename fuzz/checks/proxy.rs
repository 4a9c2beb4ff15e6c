//! What the `status_request` and `proxy_args` fuzz targets check, through
//! the proxy's hidden `tls_reload_proxy::fuzzing` entry points. Included
//! with `#[path]` by those fuzz targets and by the stable regression test
//! `crates/proxy/tests/fuzz_regressions.rs` (with `checks/args_input.rs` as
//! `crate::args_input`).

// Each fuzz target uses one of the checks; the rest is unused there.
#![allow(dead_code)]

use tls_reload_proxy::fuzzing::{parse_args, parse_status_request, StatusRequest};

use crate::args_input::{any_would_resolve, split_args};

/// The status page reads at most this much of a request head.
const HEAD_LIMIT: usize = 8 * 1024;

/// The `status_request` target: the bytes a client sends to the status
/// listener. Never a panic; the route and its code agree; the head ends at
/// the first blank line within 8 KiB (else 431 once 8 KiB came, else the
/// page waits); only `GET /status` and `GET /metrics` are answered with
/// 200; and bytes after a complete head change nothing.
pub(crate) fn status_request(data: &[u8]) {
    let answer = parse_status_request(data);
    let expected_code = match answer.route.as_str() {
        "Status" | "Metrics" => 200,
        "BadRequest" => 400,
        "NotFound" => 404,
        "MethodNotAllowed" => 405,
        "TooLarge" => 431,
        "Incomplete" => 408,
        other => panic!("unknown route {other:?}"),
    };
    assert_eq!(answer.code, expected_code, "{answer:?}");

    let head = &data[..data.len().min(HEAD_LIMIT)];
    let blank_line =
        head.windows(2).any(|w| w == b"\n\n") || head.windows(4).any(|w| w == b"\r\n\r\n");
    match answer.route.as_str() {
        "Incomplete" => assert!(!blank_line && data.len() < HEAD_LIMIT, "{answer:?}"),
        "TooLarge" => assert!(!blank_line && data.len() >= HEAD_LIMIT, "{answer:?}"),
        _ => assert!(blank_line, "routed without a complete head: {answer:?}"),
    }
    if answer.code == 200 {
        assert!(
            data.starts_with(b"GET /status") || data.starts_with(b"GET /metrics"),
            "200 for a request that is not GET /status or GET /metrics: {answer:?}"
        );
    }
    if blank_line {
        let mut more = data.to_vec();
        more.extend_from_slice(b"GET /status HTTP/1.1\r\n\r\n");
        more.resize(more.len() + HEAD_LIMIT, b'x');
        let again: StatusRequest = parse_status_request(&more);
        assert_eq!(again, answer, "bytes after the head changed the answer");
    }
}

/// The `proxy_args` target: the proxy's command line. Never a panic (inputs
/// whose addresses would need a DNS lookup are skipped); `Help` only when
/// `--help` or `-h` was given; an error says something; the same arguments
/// parse the same twice; and `--help` after a command line that parses
/// asks for the help.
pub(crate) fn proxy_args(data: &[u8]) {
    let args = split_args(data);
    if any_would_resolve(&args) {
        return;
    }
    let parsed = parse_args(args.clone());
    match &parsed {
        Ok(command) if command == "Help" => assert!(
            args.iter().any(|a| a == "--help" || a == "-h"),
            "help answered without a help flag: {args:?}"
        ),
        Ok(command) => {
            assert!(command.starts_with("Run("), "{command}");
            let mut with_help = args.clone();
            with_help.push("--help".to_owned());
            assert_eq!(
                parse_args(with_help),
                Ok("Help".to_owned()),
                "{args:?} --help"
            );
        }
        Err(message) => assert!(!message.is_empty(), "an empty error for {args:?}"),
    }
    assert_eq!(
        parse_args(args),
        parsed,
        "the same arguments parsed twice differ"
    );
}
