//! Log lines for the host's structured log (`import host.log` in the WIT
//! contract). The host tags each line with the policy's name and the request's
//! uid. Natively (in unit tests) lines go to stderr.
//!
//! Log sparingly: a policy runs on every admission review.

pub use crate::runtime::bindings::Level;

/// Writes one log line at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::runtime::bindings::stsguard::policy::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Writes a `debug` line.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes an `info` line.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a `warn` line. For the user, return a warning in the verdict instead.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}
