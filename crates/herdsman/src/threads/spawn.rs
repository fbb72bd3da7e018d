//! Thread start-up: a thread the operating system refuses to start (too many threads, no
//! memory for its stack) is a [`FatalExecutorError`] of kind
//! [`Runtime`](crate::FatalKind::Runtime), never a panic.

use std::thread::JoinHandle;

use crate::executor::FatalExecutorError;

#[cfg(test)]
thread_local! {
    /// Tests: how many more thread starts from this thread succeed before they fail
    /// (`None`: all succeed).
    pub(crate) static SPAWNS_LEFT: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
}

/// Start a named thread, or say why it could not be started.
pub(crate) fn spawn_thread<R, F>(name: String, f: F) -> Result<JoinHandle<R>, FatalExecutorError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    #[cfg(test)]
    if let Some(left) = SPAWNS_LEFT.with(|s| s.get()) {
        if left == 0 {
            return Err(refused(
                &name,
                &std::io::Error::from(std::io::ErrorKind::WouldBlock),
            ));
        }
        SPAWNS_LEFT.with(|s| s.set(Some(left - 1)));
    }
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| refused(&name, &e))
}

/// The error for a thread that could not be started.
pub(crate) fn refused(name: &str, e: &std::io::Error) -> FatalExecutorError {
    FatalExecutorError::runtime(format!(
        "the operating system refused to start thread {name} ({e}); \
         lower `workers` or raise the process's thread limit"
    ))
    .about(crate::Setting::Concurrency)
}
