//! An event wake says which paths moved (`EventWatch::take_changed`).

use std::time::{Duration, Instant};

use tls_reload_detect::{EventWatch, Wake};

#[test]
fn an_event_wake_names_the_entries_that_moved_in_a_watched_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    std::fs::write(root.join("a.pem"), "a").expect("write");
    std::fs::write(root.join("b.pem"), "b").expect("write");
    let mut events = EventWatch::new();
    events.arm(std::slice::from_ref(&root));
    assert!(events.detection().is_events(), "{:?}", events.detection());
    assert_eq!(events.take_changed(), Some(Vec::new()));

    // A rename over b.pem: the names the events gave, under the directory.
    std::fs::write(root.join(".b.pem.tmp"), "b2").expect("write");
    std::fs::rename(root.join(".b.pem.tmp"), root.join("b.pem")).expect("rename");
    let wake = smol::block_on(events.wait(Instant::now() + Duration::from_secs(10)));
    assert_eq!(wake, Wake::Event);
    let changed = events.take_changed().expect("known");
    assert!(changed.contains(&root.join("b.pem")), "{changed:?}");
    assert!(!changed.contains(&root.join("a.pem")), "{changed:?}");
    // Taken: forgotten.
    assert_eq!(events.take_changed(), Some(Vec::new()));

    // Poll only: nothing is known.
    let mut off = EventWatch::off("events off");
    assert_eq!(off.take_changed(), None);
}
