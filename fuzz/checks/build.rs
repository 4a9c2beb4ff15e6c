//! What the `materials` and `ca_dir` fuzz targets check on every input. The
//! fuzz targets (nightly, libFuzzer) and the stable regression test
//! `crates/build/tests/fuzz_regressions.rs` both include this file with
//! `#[path]`, so a saved input is checked by the same code either way.
//!
//! The properties: a build either succeeds or returns an error, never
//! panics (libFuzzer reports a panic as a crash; the regression test fails
//! on one), and neither the error's `Display` nor its `Debug` holds any run
//! of the input: no stretch of the file as written, no byte list or hex of
//! it or of the DER its PEM bodies decode to.

// Each fuzz target uses one of the checks; the rest is unused there.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tls_reload_build::{
    build_blocking, build_from_bytes, BuildError, Built, MaterialBytes, Materials, Template,
};

/// Separates the parts of one fuzz input (certificate, key, CA bundles; or
/// the entries of a CA directory). PEM never holds a NUL byte.
pub(crate) const SEPARATOR: u8 = 0;

/// The most client CA bundles (or CA directory entries) one input makes.
pub(crate) const MAX_PARTS: usize = 16;

/// The shortest run of input bytes that counts as a leak when an error
/// message holds it verbatim.
pub(crate) const LEAK_WINDOW: usize = 12;

/// The shortest run of input bytes that counts as a leak when an error
/// message holds it as a byte list (`[80, 82, 73, ...`) or as hex.
pub(crate) const LEAK_ENCODED_BYTES: usize = 8;

/// The certificate and key the `ca_dir` target serves while its CA files
/// are fuzzed (made by `fuzz/seeds/generate.sh`).
const IDENTITY_CERT: &[u8] = include_bytes!("../fixtures/identity.crt");
const IDENTITY_KEY: &[u8] = include_bytes!("../fixtures/identity.key");

/// The labels the build knows: the text of BEGIN/END lines, which errors
/// name legitimately (`this RSA PRIVATE KEY section ...`).
const LABELS: [&str; 9] = [
    "CERTIFICATE",
    "PRIVATE KEY",
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "PUBLIC KEY",
    "CERTIFICATE REQUEST",
    "X509 CRL",
    "TRUSTED CERTIFICATE",
];

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    // Validity off: the seeds' dates must not decide what an input does.
    TEMPLATE.get_or_init(|| {
        Template::new(Arc::new(rustls::crypto::ring::default_provider())).check_validity(false)
    })
}

/// The `materials` target: `cert PEM \0 key PEM [\0 CA bundle]...` built
/// from memory.
pub(crate) fn materials(data: &[u8]) {
    let (bytes, names) = material_bytes(data);
    match build_from_bytes(&bytes, template(), None) {
        Ok(built) => {
            let files: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
            assert_eq!(built.files(), files.as_slice(), "a build names its files");
            // What a status page or log shows of a build holds nothing of
            // the private key (the certificate's serial and subject it may).
            let key = data.split(|&b| b == SEPARATOR).nth(1).unwrap_or_default();
            let shown = format!("{built:?}");
            assert_no_leak(&private_key_lines(key), &shown, &names, &|_| None);
            assert_no_passphrase(data, &shown, &|_| None);
            // A rebuild of the same bytes, given the first as the served
            // build (the reload path), succeeds with the same leaf.
            let again = build_from_bytes(&bytes, template(), Some(&built))
                .unwrap_or_else(|e| panic!("the same bytes built once, then failed: {e}"));
            assert_eq!(
                again.leaf(),
                built.leaf(),
                "the same bytes give the same leaf"
            );
        }
        Err(error) => {
            let text = format!("{error} {error:?}");
            assert_no_leak(data, &text, &names, &materials_error);
            assert_no_passphrase(data, &text, &materials_error);
        }
    }
}

/// The `materials_der` target: the DER under the PEM, so that mutations
/// reach the X.509 and key parsers instead of mostly breaking the base64.
/// The input is one byte choosing the key's label (`PRIVATE KEY`,
/// `RSA PRIVATE KEY`, `EC PRIVATE KEY` by its value modulo 3), the
/// certificate DER's length as two big-endian bytes, the certificate DER,
/// then the key DER. Both are written out as PEM and go through the
/// `materials` check.
pub(crate) fn materials_der(data: &[u8]) {
    materials(&der_as_materials(data));
}

/// A `materials_der` input as the `materials` input it stands for.
pub(crate) fn der_as_materials(data: &[u8]) -> Vec<u8> {
    let (label, rest) = match data.split_first() {
        Some((&selector, rest)) => (
            ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"][usize::from(selector % 3)],
            rest,
        ),
        None => ("PRIVATE KEY", data),
    };
    let (cert, key) = match rest {
        [high, low, rest @ ..] => {
            rest.split_at(usize::from(u16::from_be_bytes([*high, *low])).min(rest.len()))
        }
        _ => (rest, &[][..]),
    };
    let mut out = pem("CERTIFICATE", cert);
    out.push(SEPARATOR);
    out.extend(pem(label, key));
    out
}

/// `der` as one PEM section, 64 base64 characters a line.
fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = Vec::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                base64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                base64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n").into_bytes();
    for line in base64.chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend(format!("-----END {label}-----\n").bytes());
    out
}

/// The materials a `materials` input describes, and their names. After the
/// certificate and the key, a part that starts with `passphrase:` is the
/// key's passphrase (the rest of the part), one that holds `X509 CRL` a CRL
/// file, and any other a client CA bundle.
fn material_bytes(data: &[u8]) -> (MaterialBytes, Vec<String>) {
    let mut parts = data.split(|&b| b == SEPARATOR);
    let cert = parts.next().unwrap_or_default();
    let key = parts.next().unwrap_or_default();
    let mut bytes = MaterialBytes::new("cert.pem", cert, "key.pem", key);
    // The names in the order a build lists its files: certificate, key,
    // client CAs, CRLs, passphrase.
    let (mut cas, mut crls, mut passphrase) = (Vec::new(), Vec::new(), None);
    for (i, part) in parts.take(MAX_PARTS).enumerate() {
        if let Some(secret) = part.strip_prefix(PASSPHRASE) {
            bytes = bytes.with_key_passphrase("passphrase.txt", secret);
            passphrase = Some("passphrase.txt".to_owned());
        } else if part.windows(8).any(|w| w == b"X509 CRL") {
            let name = format!("crl-{i}.pem");
            bytes = bytes.with_crl(&name, part);
            crls.push(name);
        } else {
            let name = format!("ca-{i}.pem");
            bytes = bytes.with_client_ca(&name, part);
            cas.push(name);
        }
    }
    let names = ["cert.pem".to_owned(), "key.pem".to_owned()]
        .into_iter()
        .chain(cas)
        .chain(crls)
        .chain(passphrase)
        .collect();
    (bytes, names)
}

/// What starts a `materials` part that is the key's passphrase.
const PASSPHRASE: &[u8] = b"passphrase:";

/// Every passphrase part of a `materials` input, as the build uses it
/// (trailing newlines stripped), when at least 8 bytes long: shorter ones
/// may be in any text by chance.
fn passphrases(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == SEPARATOR)
        .skip(2)
        .take(MAX_PARTS)
        .filter_map(|part| part.strip_prefix(PASSPHRASE))
        .map(|p| {
            let end = p
                .iter()
                .rposition(|&b| b != b'\n' && b != b'\r')
                .map_or(0, |i| i + 1);
            &p[..end]
        })
        .filter(|p| p.len() >= 8)
        .collect()
}

/// Panics when `text` holds one of the input's passphrases (see
/// [`passphrases`]) that is not the text's own wording (see [`leak`]).
fn assert_no_passphrase(data: &[u8], text: &str, rerun: &dyn Fn(&[u8]) -> Option<String>) {
    for passphrase in passphrases(data) {
        let target = window_hashes(passphrase, passphrase.len()).next();
        let held = window_hashes(text.as_bytes(), passphrase.len()).any(|h| Some(h) == target);
        if held && !own_wording(data, passphrase, rerun) {
            panic!("the key's passphrase is in an error or Debug output:\n{text}");
        }
    }
}

/// The error text (`Display` and `Debug`) of a `materials` input's build.
fn materials_error(data: &[u8]) -> Option<String> {
    let (bytes, _) = material_bytes(data);
    build_from_bytes(&bytes, template(), None)
        .err()
        .map(|error| format!("{error} {error:?}"))
}

/// What kind of directory entry a part of a `ca_dir` input makes, by its
/// first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A regular file holding the whole part.
    File,
    /// `0x01`: a hidden file (name starting with `.`), never read.
    Hidden,
    /// `0x02`: a symlink to the entry before it (dangling for the first).
    LinkToPrevious,
    /// `0x03`: a symlink to a path that does not exist.
    Dangling,
    /// `0x04`: a subdirectory, which is not a CA file.
    Subdir,
}

impl Entry {
    fn of(part: &[u8]) -> (Self, &[u8]) {
        match part.split_first() {
            Some((1, rest)) => (Self::Hidden, rest),
            Some((2, rest)) => (Self::LinkToPrevious, rest),
            Some((3, rest)) => (Self::Dangling, rest),
            Some((4, rest)) => (Self::Subdir, rest),
            _ => (Self::File, part),
        }
    }
}

/// The `ca_dir` target: the parts of the input, split at NUL, become the
/// entries of a client CA directory (see [`Entry`]), which a fixed valid
/// certificate and key are built with, from disk.
pub(crate) fn ca_dir(data: &[u8]) {
    let (made, result) = build_ca_dir(data);
    match result {
        Ok(built) => {
            let mut readable = made.readable;
            assert!(
                !readable.is_empty(),
                "a CA directory with no readable file was accepted"
            );
            // Certificate, key, then every visible file of the directory
            // (symlinks followed), in sorted order: hidden files, dangling
            // links and subdirectories are skipped.
            readable.sort();
            assert_eq!(built.files()[..2], [made.cert, made.key]);
            assert_eq!(built.files()[2..], readable[..], "the CA files read");
        }
        Err(error) => assert_no_leak(data, &format!("{error} {error:?}"), &made.names, &|data| {
            let (_, result) = build_ca_dir(data);
            result.err().map(|error| format!("{error} {error:?}"))
        }),
    }
}

/// A CA directory made for one `ca_dir` input (removed on drop).
struct MadeDir {
    _root: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    /// Every path an error may name: the directories and each entry.
    names: Vec<String>,
    /// The entries that are regular files (or links to one) and not hidden.
    readable: Vec<PathBuf>,
}

/// Makes the CA directory a `ca_dir` input describes, and builds with it.
fn build_ca_dir(data: &[u8]) -> (MadeDir, Result<Built, BuildError>) {
    let root = tempfile::tempdir().expect("temp dir");
    let cert = root.path().join("tls.crt");
    let key = root.path().join("tls.key");
    let dir = root.path().join("cas");
    std::fs::write(&cert, IDENTITY_CERT).expect("write cert");
    std::fs::write(&key, IDENTITY_KEY).expect("write key");
    std::fs::create_dir(&dir).expect("create CA dir");

    let mut names: Vec<String> = [root.path(), &cert, &key, &dir]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut previous: Option<PathBuf> = None;
    let mut readable: Vec<PathBuf> = Vec::new();
    let parts: Vec<&[u8]> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|&b| b == SEPARATOR).take(MAX_PARTS).collect()
    };
    for (i, part) in parts.iter().enumerate() {
        let (entry, contents) = Entry::of(part);
        let path = dir.join(match entry {
            Entry::Hidden => format!(".ca-{i:02}.pem"),
            _ => format!("ca-{i:02}.pem"),
        });
        match entry {
            Entry::File | Entry::Hidden => std::fs::write(&path, contents).expect("write CA"),
            Entry::LinkToPrevious => {
                let target = previous.clone().unwrap_or_else(|| dir.join("missing"));
                symlink(&target, &path);
            }
            Entry::Dangling => symlink(&dir.join(format!("missing-{i:02}")), &path),
            Entry::Subdir => std::fs::create_dir(&path).expect("create subdir"),
        }
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) && entry != Entry::Hidden {
            readable.push(path.clone());
        }
        names.push(path.display().to_string());
        previous = Some(path);
    }

    let materials = Materials::new(&cert, &key).with_client_ca_dir(&dir);
    let result = build_blocking(&materials, template(), None);
    let made = MadeDir {
        _root: root,
        cert,
        key,
        names,
        readable,
    };
    (made, result)
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

#[cfg(not(unix))]
fn symlink(_target: &Path, link: &Path) {
    std::fs::write(link, b"").expect("write stand-in for a symlink");
}

/// Panics when `text` (an error's `Display` and `Debug`) leaks a run of
/// `input`; see [`leak`].
pub(crate) fn assert_no_leak(
    input: &[u8],
    text: &str,
    names: &[String],
    rerun: &dyn Fn(&[u8]) -> Option<String>,
) {
    if let Some(what) = leak(input, text, names, rerun) {
        panic!("input bytes leak into an error or Debug output: {what}\n--- text:\n{text}");
    }
}

/// Whether `text` holds a run of `input`, and which:
///
/// - a run of [`LEAK_WINDOW`] input bytes verbatim (a base64 line of a key,
///   say), unless the run is only whitespace and dashes, or lies inside
///   what an error may legitimately name (one of `names`, the file names
///   given to the build, or a known PEM label with its BEGIN/END markers),
///   or is the error's own wording: `rerun` (the same build on other
///   bytes) still prints it for the input with every copy of the run
///   overwritten, so it does not come from the input;
/// - a list of at least [`LEAK_ENCODED_BYTES`] decimal numbers
///   (`[80, 82, 73, ...]`, how `Debug` prints bytes), or a run of hex digits
///   as long, that is a run of the input or of the DER its base64 bodies
///   decode to.
pub(crate) fn leak(
    input: &[u8],
    text: &str,
    names: &[String],
    rerun: &dyn Fn(&[u8]) -> Option<String>,
) -> Option<String> {
    // Windows are compared by hash, never byte by byte: libFuzzer watches
    // memcmp and feeds what it was compared with back into its inputs, so
    // comparing the input with the error text would teach it the text.
    let text_windows: HashSet<u64> = window_hashes(text.as_bytes(), LEAK_WINDOW).collect();
    if !text_windows.is_empty() {
        let allowed = allowed_phrases(names);
        for (offset, hash) in window_hashes(input, LEAK_WINDOW).enumerate() {
            let window = &input[offset..offset + LEAK_WINDOW];
            if text_windows.contains(&hash)
                && !harmless(window, &allowed)
                && !own_wording(input, window, rerun)
            {
                return Some(format!(
                    "the {LEAK_WINDOW} bytes at offset {offset}: {:?}",
                    String::from_utf8_lossy(window)
                ));
            }
        }
    }
    let encoded: Vec<(&str, Vec<u8>)> = byte_lists(text)
        .into_iter()
        .map(|run| ("a byte list", run))
        .chain(hex_runs(text).into_iter().map(|run| ("hex", run)))
        .collect();
    if encoded.is_empty() {
        return None;
    }
    let mut blobs = decoded_bodies(input);
    blobs.push(input.to_vec());
    let known: HashSet<u64> = blobs
        .iter()
        .flat_map(|blob| window_hashes(blob, LEAK_ENCODED_BYTES))
        .collect();
    for (form, run) in &encoded {
        for (offset, hash) in window_hashes(run, LEAK_ENCODED_BYTES).enumerate() {
            if known.contains(&hash) {
                let window = &run[offset..offset + LEAK_ENCODED_BYTES];
                return Some(format!("input bytes as {form}: {window:?}"));
            }
        }
    }
    None
}

/// Whether `window`, found in both the input and the error, is the error's
/// own text: with every copy of `window` in the input overwritten, the
/// build still fails with a text that holds it. Two ways of overwriting are
/// tried: each letter and digit moved one place along in its range (which
/// keeps base64 base64 and a PEM's structure as it was, so the build fails
/// the same way), then every byte set to `0x01`.
fn own_wording(input: &[u8], window: &[u8], rerun: &dyn Fn(&[u8]) -> Option<String>) -> bool {
    let target = window_hashes(window, window.len()).next();
    let holds = |bytes: &[u8]| window_hashes(bytes, window.len()).any(|hash| Some(hash) == target);
    let shift = |b: u8| match b {
        b'A'..=b'Y' | b'a'..=b'y' | b'0'..=b'8' => b + 1,
        b'Z' => b'A',
        b'z' => b'a',
        b'9' => b'0',
        other => other,
    };
    [false, true].into_iter().any(|blank| {
        let mut changed = input.to_vec();
        let mut offset = 0;
        while offset + window.len() <= changed.len() {
            let part = &mut changed[offset..offset + window.len()];
            if window_hashes(part, window.len()).next() == target {
                if blank {
                    part.fill(1);
                } else {
                    part.iter_mut().for_each(|b| *b = shift(*b));
                }
                offset += window.len();
            } else {
                offset += 1;
            }
        }
        // Sound only if the input no longer holds the window anywhere.
        !holds(&changed) && rerun(&changed).is_some_and(|text| holds(text.as_bytes()))
    })
}

/// The FNV-1a hash of every `width`-byte window of `bytes`, in order.
fn window_hashes(bytes: &[u8], width: usize) -> impl Iterator<Item = u64> + '_ {
    bytes.windows(width).map(|window| {
        window.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    })
}

fn allowed_phrases(names: &[String]) -> Vec<String> {
    let mut allowed: Vec<String> = names.to_vec();
    for label in LABELS {
        allowed.push(format!("-----BEGIN {label}-----"));
        allowed.push(format!("-----END {label}-----"));
    }
    allowed
}

fn harmless(window: &[u8], allowed: &[String]) -> bool {
    window.iter().all(|&b| b.is_ascii_whitespace() || b == b'-')
        || allowed.iter().any(|phrase| {
            phrase
                .as_bytes()
                .windows(window.len())
                .any(|part| part == window)
        })
}

/// The body lines of the `... PRIVATE KEY` sections of `pem`, one per line.
fn private_key_lines(pem: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in pem.split(|&b| b == b'\n') {
        if line.starts_with(b"-----BEGIN ") {
            inside = line.windows(11).any(|w| w == b"PRIVATE KEY");
        } else if line.starts_with(b"-----END ") {
            inside = false;
        } else if inside {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

/// The bytes of every base64 body in `input`: runs of lines made only of
/// base64 characters, decoded leniently (what does not decode is dropped).
fn decoded_bodies(input: &[u8]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    for line in input.split(|&b| b == b'\n') {
        let body_line = line
            .iter()
            .all(|&b| b.is_ascii_whitespace() || base64_value(b).is_some() || b == b'=');
        if body_line {
            run.extend(line.iter().filter(|&&b| base64_value(b).is_some()));
        } else if !run.is_empty() {
            bodies.push(decode_base64(&run));
            run.clear();
        }
    }
    if !run.is_empty() {
        bodies.push(decode_base64(&run));
    }
    bodies
}

fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn decode_base64(chars: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for value in chars.iter().filter_map(|&b| base64_value(b)) {
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Every list of at least [`LEAK_ENCODED_BYTES`] numbers of at most 255
/// separated by `,` and spaces: how `Debug` prints a `Vec<u8>`.
fn byte_lists(text: &str) -> Vec<Vec<u8>> {
    let mut lists = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            match text[start..i].parse::<u8>() {
                Ok(value) => current.push(value),
                Err(_) => flush(&mut lists, &mut current),
            }
            // Only `, ` (or `,`) continues a list.
            let mut j = i;
            if j < bytes.len() && bytes[j] == b',' {
                j += 1;
                while j < bytes.len() && bytes[j] == b' ' {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    i = j;
                    continue;
                }
            }
            flush(&mut lists, &mut current);
        } else {
            i += 1;
        }
    }
    flush(&mut lists, &mut current);
    lists
}

fn flush(lists: &mut Vec<Vec<u8>>, current: &mut Vec<u8>) {
    if current.len() >= LEAK_ENCODED_BYTES {
        lists.push(std::mem::take(current));
    }
    current.clear();
}

/// Every run of at least 2 × [`LEAK_ENCODED_BYTES`] hex digits (`:` or
/// spaces between pairs allowed), decoded.
fn hex_runs(text: &str) -> Vec<Vec<u8>> {
    let mut runs = Vec::new();
    let mut digits: Vec<u8> = Vec::new();
    let mut end = |digits: &mut Vec<u8>| {
        if digits.len() >= 2 * LEAK_ENCODED_BYTES {
            runs.push(
                digits
                    .chunks_exact(2)
                    .map(|pair| (pair[0] << 4) | pair[1])
                    .collect(),
            );
        }
        digits.clear();
    };
    for c in text.chars() {
        match c.to_digit(16) {
            Some(value) => digits.push(value as u8),
            None if (c == ':' || c == ' ') && digits.len() % 2 == 0 && !digits.is_empty() => {}
            None => end(&mut digits),
        }
    }
    end(&mut digits);
    runs
}
