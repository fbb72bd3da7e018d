//! Fault-injection points for the crash tests: `HERDSMAN_FAULT=<point>` kills the process
//! with SIGKILL when the run reaches that point.
//!
//! The lowest layer of the CLI: every module may call [`fault`], and this one depends on none.
//! It must never do anything when the variable is unset or names another point.

/// Crash points for the crash-equivalence tests: `HERDSMAN_FAULT=<point>` kills the
/// process there with SIGKILL (no destructors, no flushing).
pub fn fault(point: &str) {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if FAULT
        .get_or_init(|| std::env::var("HERDSMAN_FAULT").ok())
        .as_deref()
        == Some(point)
    {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
    }
}
