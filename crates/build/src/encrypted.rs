//! Encrypted PKCS#8 private keys (`ENCRYPTED PRIVATE KEY`), decrypted by
//! RustCrypto's `pkcs8`/`pkcs5` (PBES2: PBKDF2 or scrypt, then AES-CBC).
//!
//! The passphrase is borrowed from [`MaterialBytes`](crate::MaterialBytes),
//! which wipes it; the plaintext is decrypted in place in a buffer wiped
//! when dropped, and only a copy of the key's DER leaves, for the crypto
//! provider. No error holds the passphrase or a byte of the key.

use std::path::Path;

use pkcs8::der::{asn1::OctetStringRef, Decode, Reader, SliceReader};
use pkcs8::pkcs5::{pbes2, EncryptionScheme};
use pkcs8::{AlgorithmIdentifierRef, EncryptedPrivateKeyInfo, PrivateKeyInfo};
use rustls::pki_types::PrivateKeyDer;
use zeroize::Zeroizing;

use crate::{BuildError, KeyEncryptionProblem};

/// The most PBKDF2 iterations a build runs (OpenSSL writes 2,048; current
/// advice is about 600,000).
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// The most scrypt work a build does, as memory: 128 * r * N * p bytes
/// (`openssl pkcs8 -scrypt` asks for 16 MiB; OpenSSL itself stops at 32).
const MAX_SCRYPT_BYTES: u128 = 256 * 1024 * 1024;

/// Decrypts the encrypted PKCS#8 key `der`, read from `path`, with
/// `passphrase`, read from `passphrase_file`.
pub(crate) fn decrypt(
    path: &Path,
    der: &[u8],
    passphrase: &[u8],
    passphrase_file: &Path,
) -> Result<PrivateKeyDer<'static>, BuildError> {
    let bad = |problem| BuildError::BadEncryptedKey {
        path: path.to_owned(),
        problem,
    };
    if passphrase.is_empty() {
        return Err(BuildError::EmptyPassphrase {
            path: passphrase_file.to_owned(),
        });
    }
    let info = EncryptedPrivateKeyInfo::from_der(der).map_err(|_| bad(classify(der)))?;
    let params = match &info.encryption_algorithm {
        EncryptionScheme::Pbes2(params) => params,
        _ => return Err(bad(KeyEncryptionProblem::UnsupportedScheme)),
    };
    if too_costly(&params.kdf) {
        return Err(bad(KeyEncryptionProblem::TooCostly));
    }
    let mut buffer = Zeroizing::new(info.encrypted_data.to_vec());
    let plaintext = match params.decrypt_in_place(passphrase, &mut buffer) {
        Ok(plaintext) => plaintext,
        // A bad padding: pkcs5 0.7 reports it as a failed encryption.
        Err(pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed) => {
            return Err(wrong(path, passphrase_file))
        }
        Err(_) => return Err(bad(KeyEncryptionProblem::UnsupportedScheme)),
    };
    // A wrong passphrase passes the padding check once in about 256 tries;
    // what it yields is then not a PKCS#8 key.
    if PrivateKeyInfo::from_der(plaintext).is_err() {
        return Err(wrong(path, passphrase_file));
    }
    Ok(PrivateKeyDer::Pkcs8(plaintext.to_vec().into()))
}

fn wrong(path: &Path, passphrase_file: &Path) -> BuildError {
    BuildError::WrongPassphrase {
        path: path.to_owned(),
        passphrase_file: passphrase_file.to_owned(),
    }
}

/// Whether the key derivation asks for more than a build allows.
fn too_costly(kdf: &pbes2::Kdf<'_>) -> bool {
    match kdf {
        pbes2::Kdf::Pbkdf2(params) => params.iteration_count > MAX_PBKDF2_ITERATIONS,
        pbes2::Kdf::Scrypt(params) => {
            let work = 128
                * u128::from(params.cost_parameter)
                * u128::from(params.block_size)
                * u128::from(params.parallelization);
            work > MAX_SCRYPT_BYTES
        }
        // A KDF this version of pkcs5 does not know cannot be run anyway.
        _ => false,
    }
}

/// Why `der` did not parse as an encrypted key: an `EncryptedPrivateKeyInfo`
/// shape (an algorithm and an octet string) whose scheme `pkcs5` does not
/// know, or not that shape at all.
fn classify(der: &[u8]) -> KeyEncryptionProblem {
    let shaped = SliceReader::new(der).and_then(|mut reader| {
        reader.sequence(|inner| {
            AlgorithmIdentifierRef::decode(inner)?;
            OctetStringRef::decode(inner)?;
            Ok(())
        })?;
        reader.finish(())
    });
    match shaped {
        Ok(()) => KeyEncryptionProblem::UnsupportedScheme,
        Err(_) => KeyEncryptionProblem::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pkcs8::der::Encode;

    const SALT: &[u8] = b"saltsalt";
    const IV: [u8; 16] = [7; 16];

    /// `plaintext` encrypted under `params` with `passphrase`, as DER.
    fn encrypted(params: pbes2::Parameters<'_>, passphrase: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let data = params.encrypt(passphrase, plaintext).expect("encrypt");
        EncryptedPrivateKeyInfo {
            encryption_algorithm: EncryptionScheme::Pbes2(params),
            encrypted_data: &data,
        }
        .to_der()
        .expect("DER")
    }

    fn error(der: &[u8], passphrase: &[u8]) -> BuildError {
        decrypt(Path::new("k"), der, passphrase, Path::new("p")).expect_err("refused")
    }

    #[test]
    fn a_good_padding_around_what_is_no_key_is_a_wrong_passphrase() {
        // What a wrong passphrase that passes the padding check yields.
        let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(2, SALT, &IV).expect("params");
        let der = encrypted(params, b"pass", b"not a PKCS#8 key");
        assert!(matches!(
            error(&der, b"pass"),
            BuildError::WrongPassphrase { .. }
        ));
    }

    #[test]
    fn a_costly_key_derivation_is_refused_before_it_runs() {
        // 128 * 8 * 2^20 bytes: 1 GiB of scrypt.
        let scrypt = pkcs8::pkcs5::scrypt::Params::new(20, 8, 1, 32).expect("scrypt params");
        let params = pbes2::Parameters::scrypt_aes256cbc(scrypt, SALT, &IV).expect("params");
        let der = EncryptedPrivateKeyInfo {
            encryption_algorithm: EncryptionScheme::Pbes2(params),
            encrypted_data: &[0; 48],
        }
        .to_der()
        .expect("DER");
        assert!(matches!(
            error(&der, b"pass"),
            BuildError::BadEncryptedKey {
                problem: KeyEncryptionProblem::TooCostly,
                ..
            }
        ));
        let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(50_000_000, SALT, &IV).expect("p");
        let der = EncryptedPrivateKeyInfo {
            encryption_algorithm: EncryptionScheme::Pbes2(params),
            encrypted_data: &[0; 48],
        }
        .to_der()
        .expect("DER");
        assert!(matches!(
            error(&der, b"pass"),
            BuildError::BadEncryptedKey {
                problem: KeyEncryptionProblem::TooCostly,
                ..
            }
        ));
    }

    #[test]
    fn an_empty_passphrase_is_named() {
        let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(2, SALT, &IV).expect("params");
        let der = encrypted(params, b"pass", b"whatever");
        assert!(matches!(
            error(&der, b""),
            BuildError::EmptyPassphrase { .. }
        ));
    }
}
