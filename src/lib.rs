//! placeholder
pub use tls_reload_acceptor as acceptor;
pub use tls_reload_build as build;
pub use tls_reload_detect as detect;
