//! Files the way renewers write them: in place, atomically, as a
//! Kubernetes secret volume; CA directories; openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use tls_reload_build::Materials;

use crate::pki::{ca_pem, Leaf};

/// Rewrites `path` in place (same inode: truncate, then write), as `cp`
/// does.
pub fn write_in_place(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Replaces `path` atomically: writes `.NAME.tmp` beside it, then renames
/// it over `path`, so a reader sees the old file or the new one.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_in_place(&tmp, contents);
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_new(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    write_in_place(&path, contents);
    path
}

/// Writes a leaf as `dir/NAME.crt` and `dir/NAME.key`; returns both paths.
pub fn write_leaf(dir: &Path, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    (
        write_new(dir, &format!("{name}.crt"), leaf.cert_pem()),
        write_new(dir, &format!("{name}.key"), leaf.key_pem()),
    )
}

/// Writes a leaf and its key in one file, `dir/STEM.pem` (chain, then
/// key); returns its path.
pub fn write_combined(dir: &Path, stem: &str, leaf: &Leaf) -> PathBuf {
    write_new(
        dir,
        &format!("{stem}.pem"),
        leaf.cert_pem() + &leaf.key_pem(),
    )
}

/// Writes a leaf as `dir/tls.crt` and `dir/tls.key`, returning the materials.
pub fn write_pair(dir: &Path, leaf: &Leaf) -> Materials {
    let (cert, key) = write_leaf(dir, "tls", leaf);
    Materials::new(cert, key)
}

/// Creates `dir` holding `count` self-signed CA certificates, one per file
/// (`ca-0000.pem`, ...; CN `client CA <i>`), and returns it.
pub fn write_ca_dir(dir: &Path, count: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    for i in 0..count {
        write_new(
            dir,
            &format!("ca-{i:04}.pem"),
            ca_pem(&format!("client CA {i}")),
        );
    }
    dir.to_owned()
}

/// A symlink at `link` to `target`.
pub fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
}

/// A directory laid out like a Kubernetes secret volume, as the kubelet's
/// atomic writer makes it: the files in a timestamped directory `..TS/`,
/// `..data -> ..TS`, and for each file `NAME -> ..data/NAME` (for a leaf:
/// `tls.crt` and `tls.key`).
#[derive(Debug)]
pub struct SecretVolume {
    /// The volume's directory.
    pub dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    /// Lays out the volume in `dir` with `leaf` as `tls.crt` and `tls.key`.
    pub fn new(dir: &Path, leaf: &Leaf) -> Self {
        Self::with_files(dir, &leaf_files(leaf))
    }

    /// Lays out the volume in `dir` (created if missing) with these files,
    /// by name and contents.
    pub fn with_files<C: AsRef<[u8]>>(dir: &Path, files: &[(&str, C)]) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mut volume = Self {
            dir: dir.to_owned(),
            version: 0,
        };
        let first = volume.write_version(files);
        symlink(&first, &dir.join("..data"));
        for (name, _) in files {
            symlink(&Path::new("..data").join(name), &dir.join(name));
        }
        volume
    }

    /// `tls.crt` and `tls.key` at the top of the volume.
    pub fn materials(&self) -> Materials {
        Materials::new(self.dir.join("tls.crt"), self.dir.join("tls.key"))
    }

    /// Swaps in `leaf` as a new version (see [`swap_files`](Self::swap_files)).
    pub fn swap(&mut self, leaf: &Leaf) {
        self.swap_files(&leaf_files(leaf));
    }

    /// Swaps in a new version the way the kubelet does: a new timestamped
    /// directory, a `..data_tmp` symlink to it renamed over `..data`, then
    /// the old version removed. The names are those the volume was made
    /// with.
    pub fn swap_files<C: AsRef<[u8]>>(&mut self, files: &[(&str, C)]) {
        let old = std::fs::read_link(self.dir.join("..data")).expect("..data");
        let new = self.write_version(files);
        let tmp = self.dir.join("..data_tmp");
        symlink(&new, &tmp);
        std::fs::rename(&tmp, self.dir.join("..data")).expect("rename ..data_tmp");
        std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old version");
    }

    fn write_version<C: AsRef<[u8]>>(&mut self, files: &[(&str, C)]) -> PathBuf {
        self.version += 1;
        let name = PathBuf::from(format!(
            "..2025_01_01_00_00_{:02}.{}",
            self.version,
            100 + self.version
        ));
        let dir = self.dir.join(&name);
        std::fs::create_dir(&dir).expect("version dir");
        for (file, contents) in files {
            write_new(&dir, file, contents.as_ref());
        }
        name
    }
}

fn leaf_files(leaf: &Leaf) -> [(&'static str, Vec<u8>); 2] {
    [
        ("tls.crt", leaf.cert_pem().into_bytes()),
        ("tls.key", leaf.key_pem().into_bytes()),
    ]
}

/// Runs openssl in `dir`, panicking with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `dir/CERT`, a self-signed certificate for `localhost` (CN) valid
/// for two days, for the key in `dir/KEY`, with openssl.
pub fn openssl_self_signed(dir: &Path, key: &str, cert: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            key,
            "-subj",
            "/CN=localhost",
            "-days",
            "2",
            "-out",
            cert,
        ],
    );
}
