//! How an args fuzz target turns its input into a command line, and which
//! inputs it skips. Shared by `checks/example_args.rs` and `checks/proxy.rs`
//! (both expect this file as `crate::args_input`).

use std::net::SocketAddr;

/// One argument per NUL-separated part of the input (invalid UTF-8 replaced,
/// as a command line is always text by the time `std::env::args` yields it).
pub(crate) fn split_args(data: &[u8]) -> Vec<String> {
    if data.is_empty() {
        return Vec::new();
    }
    String::from_utf8_lossy(data)
        .split('\0')
        .map(str::to_owned)
        .collect()
}

/// Whether `text`, given to `ToSocketAddrs`, would look a host name up (a
/// `HOST:PORT` that is not an IP address).
pub(crate) fn would_resolve(text: &str) -> bool {
    text.parse::<SocketAddr>().is_err()
        && text
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
}

/// The value of an argument of the form `--flag=value`: both parsers take
/// such an argument as a flag with its value inline.
fn inline_value(arg: &str) -> Option<&str> {
    arg.split_once('=')
        .filter(|(flag, _)| flag.starts_with("--"))
        .map(|(_, value)| value)
}

/// Whether some flag's value could be a host name to look up: the checks
/// skip such inputs, so fuzzing sends no DNS query and stays fast and
/// repeatable (host names are the resolver's business, not the parser's).
///
/// Both parsers take a value inline (`--flag=value`) or as the next
/// argument after a flag without one, so the values are among the inline
/// values and the arguments that follow an argument that is not of the
/// `--flag=value` form: those are the ones looked at.
pub(crate) fn any_would_resolve(args: &[String]) -> bool {
    args.iter().enumerate().any(|(i, arg)| {
        let follows_bare = i > 0 && inline_value(&args[i - 1]).is_none();
        (follows_bare && would_resolve(arg)) || inline_value(arg).is_some_and(would_resolve)
    })
}
