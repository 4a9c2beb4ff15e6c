//! The hidden `fuzzing` entry points, called as a fuzz target would: on
//! plain bytes and strings, with owned answers that agree with what the
//! binary does.
#![allow(clippy::unwrap_used)]

use tls_reload_proxy::fuzzing::{parse_args, parse_status_request, StatusRequest};

fn request(route: &str, code: u16) -> StatusRequest {
    StatusRequest {
        route: route.to_owned(),
        code,
    }
}

#[test]
fn status_requests_get_the_route_and_code_the_page_answers() {
    let cases: [(&[u8], &str, u16); 9] = [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "Metrics", 200),
        (b"GET /status?x HTTP/1.0\n\nbody", "Status", 200),
        (b"GET /nope HTTP/1.1\r\n\r\n", "NotFound", 404),
        (b"PUT /status HTTP/1.1\r\n\r\n", "MethodNotAllowed", 405),
        (b"\r\n\r\n", "BadRequest", 400),
        (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", "BadRequest", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", "Incomplete", 408),
        (b"", "Incomplete", 408),
        (&[b'a'; 8 * 1024], "TooLarge", 431),
    ];
    for (bytes, route, code) in cases {
        assert_eq!(
            parse_status_request(bytes),
            request(route, code),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // A head whose end comes only after 8 KiB is too large, as on a socket.
    let mut long = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    long.resize(9 * 1024, b'a');
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_status_request(&long), request("TooLarge", 431));
}

#[test]
fn arguments_parse_as_the_binary_parses_them() {
    let args = |line: &str| parse_args(line.split_whitespace().map(str::to_owned).collect());
    assert_eq!(args("--listen 127.0.0.1:0 -h").as_deref(), Ok("Help"));
    let run = args(
        "--listen 127.0.0.1:0 --target backend.internal:6379 --cert c.pem --key=k.pem \
         --interval 250ms",
    )
    .unwrap();
    assert!(
        run.starts_with("Run(Args { listen: Some(127.0.0.1:0), "),
        "{run}"
    );
    assert!(
        run.contains(r#"target: Host("backend.internal:6379")"#),
        "{run}"
    );
    assert!(run.contains("interval: 250ms"), "{run}");
    assert_eq!(
        args("--listen 127.0.0.1:0 --nope x"),
        Err(r#"unknown argument "--nope""#.to_owned())
    );
    assert_eq!(
        args("--listen 127.0.0.1:0"),
        Err("--target is required".to_owned())
    );
    assert_eq!(args("--listen"), Err("--listen needs a value".to_owned()));
}
