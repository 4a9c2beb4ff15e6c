//! Behaviour of the detectors on real files in a temp dir.

mod support;
mod table;
