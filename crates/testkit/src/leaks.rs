//! Whether a secret shows: no run of a PEM body's bytes, as text or as a
//! list of byte values, in what a program logged, returned or printed.

/// How long a run of base64 must be to count as a leak: long enough not to
/// appear by chance, short enough to catch a key cut into pieces.
pub const LEAK_WINDOW: usize = 16;

/// Every [`LEAK_WINDOW`]-byte run of `pem`'s body lines (the base64
/// between the markers; header lines with a `:` are not body).
pub fn pem_body_windows(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|line| !line.starts_with("-----") && !line.contains(':'))
        .flat_map(|line| {
            line.as_bytes()
                .chunks(LEAK_WINDOW)
                .filter(|chunk| chunk.len() == LEAK_WINDOW)
                .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The first run of at least nine comma-separated numbers in `shown`: how
/// bytes print as a list (`[80, 82, 73, ...]`), which is how a parser's
/// "offending line" once leaked a key.
pub fn byte_list(shown: &str) -> Option<&str> {
    shown
        .split(|c: char| !(c.is_ascii_digit() || c == ',' || c == ' '))
        .find(|run| run.matches(',').count() >= 8)
}

/// Panics, naming `what`, if `shown` holds a run of `pem`'s body or a list
/// of byte values.
pub fn assert_no_pem_bytes(what: &str, shown: &str, pem: &str) {
    for window in pem_body_windows(pem) {
        assert!(
            !shown.contains(&window),
            "{what} leaks key bytes ({window})"
        );
    }
    if let Some(list) = byte_list(shown) {
        panic!("{what} leaks a byte list: {list}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_is_found_as_text_or_as_numbers() {
        let pem =
            "-----BEGIN KEY-----\nMC4CAQAwBQYDK2VwBCIEIDd1ZWxhc3RpY2l0eQ==\n-----END KEY-----\n";
        assert_eq!(
            pem_body_windows(pem),
            ["MC4CAQAwBQYDK2Vw", "BCIEIDd1ZWxhc3Rp"]
        );
        assert!(byte_list("key: [80, 82, 73, 86, 65, 84, 69, 32, 75]").is_some());
        assert!(byte_list("generation 2, serial 1a, 3 files").is_none());
        assert_no_pem_bytes("a clean line", "malformed PEM at line 1", pem);
        let leaked = std::panic::catch_unwind(|| {
            assert_no_pem_bytes("a leaking line", "oops MC4CAQAwBQYDK2VwBCIE", pem)
        });
        assert!(leaked.is_err());
    }
}
