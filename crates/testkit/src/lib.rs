//! Test support for the tls-reload workspace, one copy for the tests,
//! examples and benchmarks of every crate: an rcgen PKI with chosen
//! serials ([`Ca`], [`Leaf`]), files written the way renewers write them
//! ([`write_atomic`], [`SecretVolume`], ...), deadlines ([`wait_until`],
//! [`DEADLINE`]), a loopback rustls client that reads the served serial
//! with x509-parser ([`fetch_serial`]), the two runtimes behind one trait
//! ([`Runtime`], [`on_both_runtimes!`]), captured logs, child processes,
//! and a check that no bytes of a key show ([`assert_no_pem_bytes`]).
//!
//! Not published; helpers panic with a message instead of returning errors.

mod client;
mod files;
mod io;
mod leaks;
mod logs;
mod pki;
mod process;
mod runtime;
mod wait;

pub use client::{
    client_config, connect, der_serial_hex, echo_round_trip, fetch_serial, handshake_in_memory,
    provider, resuming_client_config, served_leaf, served_serial, sni_client_config, tls_connect,
    tls_connect_to, ClientStream,
};
pub use files::{
    openssl, openssl_self_signed, symlink, write_atomic, write_ca_dir, write_combined,
    write_in_place, write_leaf, write_new, write_pair, SecretVolume,
};
pub use io::{Pipe, Silent};
pub use leaks::{assert_no_pem_bytes, byte_list, pem_body_windows, LEAK_WINDOW};
pub use logs::{init_tracing, Captured};
pub use pki::{ca_params, ca_pem, key_copy, leaf_params, new_key, rsa_key, Ca, Leaf};
pub use process::{
    callgrind_instructions, callgrind_per_item, poll_once, print_instruction_table, run_within,
    Process,
};
pub use runtime::{listen, spawn, AsyncStd, BoxIo, Connections, Io, Runtime, Smol};
pub use wait::{timeout, wait_until, wait_until_blocking, DEADLINE};

#[doc(hidden)]
pub use anyhow;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_read_back_as_leaf_info_prints_them() {
        let ca = Ca::new("CA");
        for (serial, hex) in [
            (0x1001, "1001"),
            (0x7fff, "7fff"),
            // DER pads a high bit with a zero byte; the hex leaves it out.
            (0x8000, "8000"),
            // A leading zero byte is left out too.
            (0x00ff, "ff"),
        ] {
            let leaf = ca.leaf(serial);
            assert_eq!(leaf.serial_hex(), hex);
            let info = tls_reload_build::LeafInfo::from_der(leaf.cert.der()).expect("parse");
            assert_eq!(info.serial_hex(), hex);
        }
        assert_eq!(der_serial_hex(b"not a certificate"), None);
    }

    #[test]
    fn a_secret_volume_swap_serves_the_new_pair_and_drops_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("CA");
        let (first, second) = (ca.leaf(0x1001), ca.leaf(0x1002));
        let mut volume = SecretVolume::new(dir.path(), &first);
        let materials = volume.materials();
        let read = |path: &std::path::Path| std::fs::read_to_string(path).expect("read");
        assert_eq!(read(materials.cert()), first.cert_pem());
        volume.swap(&second);
        assert_eq!(read(materials.cert()), second.cert_pem());
        assert_eq!(read(materials.key()), second.key_pem());
        let versions = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| {
                let name = e.as_ref().expect("entry").file_name();
                name.to_string_lossy().starts_with("..2025")
            })
            .count();
        assert_eq!(versions, 1, "the old version is removed");
    }

    #[test]
    fn an_atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_new(dir.path(), "tls.crt", "old");
        write_atomic(&path, "new");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }
}
