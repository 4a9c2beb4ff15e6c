//! The table of the crate docs, event by event, for every strategy.

use std::fs;
use std::path::PathBuf;

use tempfile::TempDir;
use tls_reload_detect::{DetectError, Fingerprint};
use tls_reload_testkit::{write_atomic, SecretVolume};

use crate::support::{
    next_tick, not_found, retarget, run, Kind, Mode, Outcome, Probe, TestResult, NEW, OLD,
};

use Outcome::{Change, NoChange, NotFound};

/// What is on disk before the event, and which path is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// `tls.crt`, watched.
    File,
    /// `tls.crt -> a.pem`, with `b.pem` beside it; the link is watched.
    Link,
    /// A Kubernetes secret volume; its `tls.crt` link is watched.
    Secret,
    /// A Kubernetes secret volume; the volume directory is watched.
    SecretDir,
    /// `ca.d/{a.pem,b.pem}`; the directory is watched.
    Dir,
    /// `Dir` plus `ca.d/c.pem -> ../gone.pem`, which does not exist.
    DanglingDir,
}

#[derive(Debug)]
struct Scene {
    root: TempDir,
    watched: PathBuf,
    volume: Option<SecretVolume>,
}

impl Scene {
    fn new(setup: Setup) -> std::io::Result<Self> {
        let root = tempfile::tempdir()?;
        let mut volume = None;
        let watched = match setup {
            Setup::File => {
                fs::write(root.path().join("tls.crt"), OLD)?;
                root.path().join("tls.crt")
            }
            Setup::Link => {
                fs::write(root.path().join("a.pem"), OLD)?;
                fs::write(root.path().join("b.pem"), NEW)?;
                std::os::unix::fs::symlink("a.pem", root.path().join("tls.crt"))?;
                root.path().join("tls.crt")
            }
            Setup::Secret | Setup::SecretDir => {
                let secret =
                    SecretVolume::with_files(&root.path().join("secret"), &[("tls.crt", OLD)]);
                let watched = match setup {
                    Setup::Secret => secret.dir.join("tls.crt"),
                    _ => secret.dir.clone(),
                };
                volume = Some(secret);
                watched
            }
            Setup::Dir | Setup::DanglingDir => {
                let dir = root.path().join("ca.d");
                fs::create_dir(&dir)?;
                fs::write(dir.join("a.pem"), OLD)?;
                fs::write(dir.join("b.pem"), OLD)?;
                if setup == Setup::DanglingDir {
                    std::os::unix::fs::symlink(root.path().join("gone.pem"), dir.join("c.pem"))?;
                }
                dir
            }
        };
        Ok(Self {
            root,
            watched,
            volume,
        })
    }

    fn volume(&mut self) -> &mut SecretVolume {
        self.volume.as_mut().expect("a secret volume scene")
    }
}

type Check<'a> = &'a dyn Fn() -> Result<Fingerprint, DetectError>;

struct Row {
    /// The event, exactly as in the crate docs' table.
    event: &'static str,
    setup: Setup,
    act: fn(&mut Scene, Check<'_>) -> TestResult,
    /// `ContentHash`, `Metadata`, `Combined`.
    expect: [Outcome; 3],
}

const ROWS: &[Row] = &[
    Row {
        event: "in-place rewrite with new content",
        setup: Setup::File,
        act: |scene, _| Ok(fs::write(&scene.watched, NEW)?),
        expect: [Change, Change, Change],
    },
    Row {
        event: "atomic rename of a new file over it",
        setup: Setup::File,
        act: |scene, _| {
            write_atomic(&scene.watched, NEW);
            Ok(())
        },
        expect: [Change, Change, Change],
    },
    Row {
        event: "rewrite with the same content",
        setup: Setup::File,
        act: |scene, _| Ok(fs::write(&scene.watched, OLD)?),
        expect: [NoChange, Change, NoChange],
    },
    Row {
        event: "`touch`",
        setup: Setup::File,
        act: |scene, _| Ok(run("touch", &[&scene.watched])?),
        expect: [NoChange, Change, NoChange],
    },
    Row {
        event: "`cp -p` of new content with the old mtime",
        setup: Setup::File,
        act: copy_with_old_mtime,
        expect: [Change, Change, Change],
    },
    Row {
        event: "delete",
        setup: Setup::File,
        act: |scene, _| Ok(fs::remove_file(&scene.watched)?),
        expect: [NotFound, NotFound, NotFound],
    },
    Row {
        event: "recreate with the same content after a delete",
        setup: Setup::File,
        act: |scene, check| {
            fs::remove_file(&scene.watched)?;
            match check() {
                Err(error) => not_found(&error, &scene.watched)?,
                Ok(fingerprint) => Err(format!("deleted, yet {fingerprint:?}"))?,
            }
            Ok(fs::write(&scene.watched, OLD)?)
        },
        expect: [NoChange, Change, NoChange],
    },
    Row {
        event: "symlink retargeted",
        setup: Setup::Link,
        act: |scene, _| Ok(retarget(&scene.watched, "b.pem".as_ref())?),
        expect: [Change, Change, Change],
    },
    Row {
        event: "Kubernetes `..data` swap",
        setup: Setup::Secret,
        act: swap_in_new,
        expect: [Change, Change, Change],
    },
    Row {
        event: "Kubernetes `..data` swap, directory watched",
        setup: Setup::SecretDir,
        act: swap_in_new,
        expect: [Change, Change, Change],
    },
    Row {
        event: "directory: entry added",
        setup: Setup::Dir,
        act: |scene, _| Ok(fs::write(scene.watched.join("c.pem"), OLD)?),
        expect: [Change, Change, Change],
    },
    Row {
        event: "directory: entry removed",
        setup: Setup::Dir,
        act: |scene, _| Ok(fs::remove_file(scene.watched.join("b.pem"))?),
        expect: [Change, Change, Change],
    },
    Row {
        event: "directory: entry rewritten in place",
        setup: Setup::Dir,
        act: |scene, _| Ok(fs::write(scene.watched.join("a.pem"), NEW)?),
        expect: [Change, Change, Change],
    },
    Row {
        event: "directory: dangling symlink added",
        setup: Setup::Dir,
        act: |scene, _| {
            let target = scene.root.path().join("gone.pem");
            Ok(std::os::unix::fs::symlink(
                target,
                scene.watched.join("c.pem"),
            )?)
        },
        expect: [Change, Change, Change],
    },
    Row {
        event: "directory: dangling symlink's target created",
        setup: Setup::DanglingDir,
        act: |scene, _| Ok(fs::write(scene.root.path().join("gone.pem"), OLD)?),
        expect: [Change, Change, Change],
    },
    Row {
        event: "directory: `.hidden` entry added",
        setup: Setup::Dir,
        act: |scene, _| Ok(fs::write(scene.watched.join(".hidden"), NEW)?),
        expect: [NoChange, Change, NoChange],
    },
];

/// The kubelet's swap of the secret volume to a version holding `NEW`.
fn swap_in_new(scene: &mut Scene, _: Check<'_>) -> TestResult {
    scene.volume().swap_files(&[("tls.crt", NEW)]);
    Ok(())
}

/// `cp -p` over the watched file of a same-length file whose mtime was
/// first set to the watched file's: only the ctime tells.
fn copy_with_old_mtime(scene: &mut Scene, _: Check<'_>) -> TestResult {
    let source = scene.root.path().join("new.pem");
    fs::write(&source, NEW)?;
    run("touch", &["-r".as_ref(), &scene.watched, &source])?;
    let before = fs::metadata(&scene.watched)?;
    run("cp", &["-p".as_ref(), &source, &scene.watched])?;
    let after = fs::metadata(&scene.watched)?;

    use std::os::unix::fs::MetadataExt;
    let mtime = |m: &fs::Metadata| (m.mtime(), m.mtime_nsec());
    let ctime = |m: &fs::Metadata| (m.ctime(), m.ctime_nsec());
    assert_eq!(before.ino(), after.ino(), "cp -p rewrites in place");
    assert_eq!(before.len(), after.len());
    assert_eq!(mtime(&before), mtime(&after), "cp -p kept the mtime");
    assert_ne!(ctime(&before), ctime(&after), "only the ctime tells");
    Ok(())
}

impl Kind {
    fn expected(self, row: &Row) -> Outcome {
        match self {
            Kind::Hash => row.expect[0],
            Kind::Metadata => row.expect[1],
            Kind::Combined | Kind::CombinedTrusted => row.expect[2],
        }
    }
}

#[test]
fn every_strategy_reports_what_the_table_says() -> TestResult {
    let mut failures = Vec::new();
    for row in ROWS {
        for kind in Kind::ALL {
            for mode in [Mode::Blocking, Mode::Async] {
                let mut scene = Scene::new(row.setup)?;
                let probe = Probe::new(kind, mode, &scene.watched);
                let before = probe.fingerprint()?;
                // Every strategy gets the chance to see the event in the
                // timestamps; the one-tick case has a test of its own.
                next_tick()?;
                (row.act)(&mut scene, &|| probe.fingerprint())
                    .map_err(|e| format!("{}: {e}", row.event))?;
                let outcome = Outcome::of(&before, probe.fingerprint(), &scene.watched);
                let expected = kind.expected(row);
                if outcome != Ok(expected) {
                    failures.push(format!(
                        "{} / {kind:?} / {mode:?}: expected {expected}, got {outcome:?}",
                        row.event
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    Ok(())
}

#[test]
fn two_writes_of_the_same_size_in_one_tick() -> TestResult {
    use std::os::unix::fs::MetadataExt;
    let stamp = |m: &fs::Metadata| {
        (
            m.ino(),
            m.len(),
            (m.mtime(), m.mtime_nsec()),
            (m.ctime(), m.ctime_nsec()),
        )
    };
    let mut outcomes = Vec::new();
    for attempt in 1..=50 {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tls.crt");
        fs::write(&path, OLD)?;
        // Committed right after the first write: the racy case.
        let probes = Kind::ALL.map(|kind| (kind, Probe::new(kind, Mode::Blocking, &path)));
        let before = probes
            .iter()
            .map(|(_, probe)| probe.fingerprint())
            .collect::<Result<Vec<_>, _>>()?;
        let first = fs::metadata(&path)?;
        fs::write(&path, NEW)?;
        let second = fs::metadata(&path)?;
        outcomes = probes
            .iter()
            .zip(&before)
            .map(|((kind, probe), before)| {
                Ok((*kind, Outcome::of(before, probe.fingerprint(), &path)?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if stamp(&first) == stamp(&second) {
            eprintln!("same-tick pair on attempt {attempt}");
            assert_eq!(
                outcomes,
                [
                    (Kind::Hash, Change),
                    (Kind::Metadata, NoChange),
                    (Kind::Combined, Change),
                    // Without the racy window, the metadata is trusted.
                    (Kind::CombinedTrusted, NoChange),
                ]
            );
            return Ok(());
        }
    }
    // This file system gave the second write a later timestamp every time
    // (Linux's multigrain timestamps do once a stat has seen the first):
    // then every strategy sees it.
    eprintln!("no same-tick pair in 50 attempts");
    assert!(outcomes.iter().all(|(_, o)| *o == Change), "{outcomes:?}");
    Ok(())
}

/// The rows above are the rows of the crate docs' table, word for word.
#[test]
fn the_docs_show_this_table() {
    let docs: Vec<String> = include_str!("../../src/lib.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! |"))
        .map(|row| row.replace(['¹', '²', '³'], ""))
        .map(|row| row.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let word = |outcome: Outcome| match outcome {
        NotFound => "error".to_owned(),
        other => other.to_string(),
    };
    for row in ROWS {
        let [hash, metadata, combined] = row.expect.map(word);
        let line = format!("{} | {hash} | {metadata} | {combined} |", row.event);
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(docs.contains(&line), "not in the crate docs: | {line}");
    }
    // The header, its rule, the rows, and the one-tick row tested above.
    assert_eq!(docs.len(), ROWS.len() + 3, "{docs:#?}");
}
