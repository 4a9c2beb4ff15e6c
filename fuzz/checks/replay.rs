//! Runs saved fuzz inputs through a fuzz target's check on stable, for the
//! regression tests (`cargo test`): every file under `fuzz/seeds/<target>/`
//! and `fuzz/regressions/<target>/`. Included with `#[path]`.

use std::path::{Path, PathBuf};

/// The files saved for `target`, seeds and regressions, sorted. Panics when
/// there are none: a test that checks nothing must not pass.
pub(crate) fn inputs(fuzz_dir: &Path, target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_file() && !name.starts_with('.') && !name.ends_with(".md") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no saved inputs for {target} under {}",
        fuzz_dir.display()
    );
    files
}

/// Runs `check` on every saved input of `target`; panics naming each input
/// that failed (panicked), after trying them all.
pub(crate) fn replay(fuzz_dir: &Path, target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(fuzz_dir, target);
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("read saved input");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: failing inputs: {failed:#?}");
    files.len()
}
