//! Behaviour of the detectors on real files in a temp dir.

mod hints;
mod limits;
mod stream;
mod support;
mod table;
mod watcher;
