//! Starting child processes in their own process group and stopping the whole group.
//!
//! Every child started here leads a new process group, so that killing the group also kills
//! anything it spawned. This module must never signal a process group whose leader has
//! already been reaped (its id could belong to someone else by then): groups are signalled
//! only while the leader is alive or a not-yet-reaped zombie.
//!
//! Children must not outlive this process, even when it is killed with `SIGKILL` and has no
//! chance to clean up. Two mechanisms see to it, and neither may have a gap:
//!
//! * Each child is started with the parent-death signal set to `SIGKILL`
//!   (`PR_SET_PDEATHSIG`). The kernel sends it when the *thread* that forked the child ends,
//!   not the process, so every registered child is forked by one spawner thread that lives
//!   as long as the process ([`spawn_registered`]); a pool may be started and driven from any
//!   thread, however short-lived.
//! * A small guard process (`sh`, started before the first child, in a process group of its
//!   own, detached) is told every group started and every group reaped; when this process
//!   dies, the guard's stdin reaches end of file and it kills every group still registered,
//!   so the children's own children die too. A child registers its group itself, in the
//!   forked process before it runs its program (one atomic pipe write), so the guard knows
//!   the group before the program can start anything; a group is unregistered before its
//!   leader is reaped.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The program a worker pool starts for each worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerCommand {
    /// A program and its arguments, started directly (no shell).
    Argv(Vec<String>),
    /// A command line run by `sh -c`.
    Shell(String),
}

impl WorkerCommand {
    /// A program and its arguments, started directly without a shell.
    ///
    /// ```
    /// let cmd = herdsman_workers::WorkerCommand::argv(["jq", "-c", "--unbuffered", "."]);
    /// assert_eq!(cmd.display(), "jq -c --unbuffered .");
    /// ```
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        WorkerCommand::Argv(argv.into_iter().map(Into::into).collect())
    }

    /// A command line run by `sh -c`.
    pub fn shell(line: impl Into<String>) -> Self {
        WorkerCommand::Shell(line.into())
    }

    /// The command as the user would type it, for messages.
    pub fn display(&self) -> String {
        match self {
            WorkerCommand::Argv(argv) => argv.join(" "),
            WorkerCommand::Shell(line) => line.clone(),
        }
    }

    /// The argv actually executed.
    pub(crate) fn to_argv(&self) -> Vec<String> {
        match self {
            WorkerCommand::Argv(argv) => argv.clone(),
            WorkerCommand::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
        }
    }
}

/// Builds a `Command` for `argv` that leads its own process group and starts in `cwd`
/// (the caller's directory when `None`).
pub(crate) fn group_command<S: AsRef<OsStr>>(
    argv: &[S],
    env: &[(String, String)],
    cwd: Option<&Path>,
) -> Command {
    let mut cmd = Command::new(argv[0].as_ref());
    cmd.args(argv[1..].iter().map(AsRef::as_ref));
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure only makes async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || die_with_parent(parent));
    }
    cmd
}

/// In a freshly forked child: asks the kernel to SIGKILL it when its parent dies, and gives
/// up if the parent already died before that took effect.
///
/// The parent-death signal follows the thread that forked the child: a child dies when
/// that thread ends. Registered children are therefore forked by the spawner thread, which
/// lives as long as the process (see [`spawn_registered`]).
fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and no pointers.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } as u32 != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// In a freshly forked child, before it runs its program: reports its pid to the parent on
/// `pid_fd` (so that a failed start can be unregistered), then registers its process group
/// (`+PID`) with the guard on `guard_fd` (`-1`: no guard).
///
/// Only async-signal-safe calls (getpid, write, sigaction), no allocation. The guard line is
/// one `write` of at most 12 bytes, so it is never interleaved with another process's line
/// (pipe writes up to `PIPE_BUF` are atomic). A guard that is gone is no reason to fail: the
/// parent-death signal still stops this child.
fn register_in_child(guard_fd: i32, pid_fd: i32) -> io::Result<()> {
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    write_in_child(pid_fd, &pid.to_ne_bytes());
    if guard_fd < 0 {
        return Ok(());
    }
    let mut line = [0u8; 16];
    let len = guard_line(b'+', pid as u32, &mut line);
    // SAFETY: sigaction with valid pointers to structs we own; SIGPIPE is ignored only
    // around the write (a gone guard then gives EPIPE instead of killing this child), and
    // the previous disposition is put back before the program starts.
    unsafe {
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        let mut old: libc::sigaction = std::mem::zeroed();
        let ignored = libc::sigaction(libc::SIGPIPE, &ignore, &mut old) == 0;
        write_in_child(guard_fd, &line[..len]);
        if ignored {
            libc::sigaction(libc::SIGPIPE, &old, std::ptr::null_mut());
        }
    }
    Ok(())
}

/// One `write` of `bytes` (retried on EINTR); errors are ignored. For a forked child.
fn write_in_child(fd: i32, bytes: &[u8]) {
    loop {
        // SAFETY: write from a buffer we own, with its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Formats `{op}{pid}\n` into `buf` without allocating; returns its length.
fn guard_line(op: u8, mut pid: u32, buf: &mut [u8; 16]) -> usize {
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    buf[0] = op;
    for k in 0..n {
        buf[1 + k] = digits[n - 1 - k];
    }
    buf[1 + n] = b'\n';
    n + 2
}

/// The guard's program: reads `+PGID` and `-PGID` lines; at end of file (this process is
/// gone), kills every group still registered. It ignores terminal signals, so that a
/// Ctrl-C does not take it down before it has done its job.
const GUARD_SCRIPT: &str = r#"trap '' INT HUP QUIT TERM PIPE
g=' '
while read -r p; do
  case $p in
    +*) g="$g${p#+} " ;;
    -*) p=${p#-}; case $g in *" $p "*) g="${g%% $p *} ${g#* $p }" ;; esac ;;
  esac
done
for p in $g; do kill -s KILL -- "-$p" 2>/dev/null; done
"#;

/// The pipe to the guard's stdin, opened before the first child starts; `None` if the guard
/// could not be started (then only the parent-death signal protects against a killed
/// herdsman). Never closed: children write to its descriptor number (see
/// [`register_in_child`]), which must never come to mean another file.
static GUARD: OnceLock<Option<ChildStdin>> = OnceLock::new();

/// The descriptor of the guard's pipe, for children to register with; `-1`: no guard.
static GUARD_FD: AtomicI32 = AtomicI32::new(-1);

/// Tells the guard about a group about to be reaped (`-`). Called with the live-groups lock
/// held, so the guard sees the same order as this process. A guard that is gone (someone
/// killed it) is ignored: writes to it fail and the run goes on without it.
fn tell_guard_reaped(pid: u32) {
    if let Some(Some(stdin)) = GUARD.get() {
        let mut line = [0u8; 16];
        let len = guard_line(b'-', pid, &mut line);
        let _ = (&*stdin).write_all(&line[..len]);
    }
}

/// Starts the guard if it is not running yet; returns the descriptor children register with
/// (`-1`: no guard).
fn start_guard_once() -> i32 {
    GUARD.get_or_init(|| {
        let stdin = start_guard();
        if let Some(s) = &stdin {
            GUARD_FD.store(s.as_raw_fd(), Ordering::SeqCst);
        }
        stdin
    });
    GUARD_FD.load(Ordering::SeqCst)
}

/// Starts the guard, detached: a launcher shell starts it in the background and exits, so
/// the guard is not a child of this process (it is reparented, and nobody mistakes it for
/// a worker). Returns the pipe to its stdin.
fn start_guard() -> Option<ChildStdin> {
    let mut launcher = Command::new("sh")
        .args([
            "-c",
            // (An asynchronous command's stdin is /dev/null unless redirected: pass the
            // pipe on through fd 3.)
            "exec 3<&0; sh -c \"$1\" herdsman-guard <&3 3<&- &",
            "herdsman-guard-launcher",
            GUARD_SCRIPT,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    let stdin = launcher.stdin.take();
    let started = launcher.wait().ok()?.success();
    stdin.filter(|_| started)
}

/// Starts a persistent worker with all three standard streams piped.
pub(crate) fn spawn_piped(
    argv: &[String],
    env: &[(String, String)],
    cwd: Option<&Path>,
) -> io::Result<Child> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    let mut cmd = group_command(argv, env, cwd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn_registered(cmd)
}

/// Process groups started by this process and not reaped yet (their leaders' pids).
static LIVE_GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn live_groups() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    LIVE_GROUPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spawns `cmd` (built by [`group_command`], so it leads its own process group) and
/// remembers the group, so that [`kill_all_process_groups`] and the guard can reach it.
///
/// The guard is started before the first child. The child registers its group with the
/// guard itself before its program runs, so there is no moment in which a program runs that
/// the guard does not know about, even if this process is killed right after the fork. The
/// fork happens on the spawner thread, which lives as long as the process, so the child's
/// parent-death signal fires when this process dies, never when the calling thread ends.
pub(crate) fn spawn_registered(mut cmd: Command) -> io::Result<Child> {
    let mut groups = live_groups();
    let guard_fd = start_guard_once();
    // The child writes its pid here, so that a start that fails after the child registered
    // with the guard can be unregistered (the child is reaped inside `spawn`).
    let (mut pid_reader, pid_writer) = io::pipe()?;
    let pid_fd = pid_writer.as_raw_fd();
    // SAFETY: `register_in_child` only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || register_in_child(guard_fd, pid_fd));
    }
    let spawned = spawn_on_lasting_thread(cmd);
    // The child's copy closes when its program starts or it exits; now ours too, so the read
    // below ends.
    drop(pid_writer);
    match spawned {
        Ok(child) => {
            groups.insert(child.id());
            Ok(child)
        }
        Err(e) => {
            let mut pid = [0u8; 4];
            if pid_reader.read_exact(&mut pid).is_ok() {
                tell_guard_reaped(i32::from_ne_bytes(pid) as u32);
            }
            Err(e)
        }
    }
}

/// A command for the spawner thread, and where to send the result.
struct SpawnRequest {
    cmd: Command,
    reply: Sender<io::Result<Child>>,
}

/// The spawner thread's queue, started on first use; `None` if it could not be started.
static SPAWNER: OnceLock<Option<Sender<SpawnRequest>>> = OnceLock::new();

/// Spawns `cmd` on the spawner thread, a thread that never ends before the process does:
/// a child's parent-death signal follows the thread that forked it. If that thread cannot
/// be started (the process is out of threads), `cmd` is spawned on the calling thread.
fn spawn_on_lasting_thread(mut cmd: Command) -> io::Result<Child> {
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<SpawnRequest>();
        std::thread::Builder::new()
            .name("herdsman-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(tx) = spawner else {
        return cmd.spawn();
    };
    let (reply, result) = crossbeam_channel::bounded(1);
    if let Err(back) = tx.send(SpawnRequest { cmd, reply }) {
        return back.into_inner().cmd.spawn();
    }
    result
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("the spawner thread ended")))
}

/// Reaps a child whose group was registered, forgetting the group first, here and in the
/// guard (once reaped, its pid may be reused by an unrelated process).
pub(crate) fn reap(child: &mut Child) -> Option<ExitStatus> {
    {
        let mut groups = live_groups();
        if groups.remove(&child.id()) {
            tell_guard_reaped(child.id());
        }
    }
    child.wait().ok()
}

/// Kills (SIGKILL) every worker and command process group this process started and has not
/// reaped yet, grandchildren included. For a hard stop, such as a second Ctrl-C, right
/// before the process exits: workers live in process groups of their own, so a terminal's
/// Ctrl-C does not reach them.
pub fn kill_all_process_groups() {
    for pid in live_groups().iter() {
        signal_group(*pid, Signal::SIGKILL);
    }
}

/// Checks that `dir` is a directory a child can start in. Returns why not, if not.
pub(crate) fn check_dir(dir: &Path) -> Result<(), io::Error> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok(())
}

/// Sends `sig` to the process group led by `pid`, ignoring a group that is already gone.
pub(crate) fn signal_group(pid: u32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), sig);
}

/// True if the child has exited (it stays a zombie: it is not reaped, so its process group
/// id cannot be reused yet).
pub(crate) fn has_exited(pid: u32) -> bool {
    // SAFETY: waitid only writes into the zeroed siginfo we own; WNOWAIT leaves the child
    // waitable, WNOHANG makes it return at once.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if rc != 0 {
            // ECHILD: already reaped (cannot happen for children we own) — treat as exited.
            return io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
        }
        info.si_pid() != 0
    }
}

/// Blocks until the child exits, without reaping it (so its process group id stays its own
/// until the caller reaps it).
pub(crate) fn wait_exit_unreaped(pid: u32) {
    loop {
        // SAFETY: as in `has_exited`, without WNOHANG.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Finds `program` the way `execvp` would: a path with a `/` as is (relative to `cwd` when
/// the child starts there), otherwise the first executable file of that name in `PATH`.
/// Returns why it cannot run, if it cannot.
pub(crate) fn check_program(program: &str, cwd: Option<&Path>) -> Result<(), io::Error> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| -> Result<(), io::Error> {
        let meta = std::fs::metadata(p)?;
        if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        Ok(())
    };
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.contains('/') {
        let path = Path::new(program);
        return match cwd {
            Some(dir) if path.is_relative() => runnable(&dir.join(path)),
            _ => runnable(path),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let mut denied = None;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        match runnable(&candidate) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => denied = Some(e),
        }
    }
    Err(denied.unwrap_or_else(|| io::Error::from_raw_os_error(libc::ENOENT)))
}

/// Waits up to `limit` for the child to exit, without reaping it. Returns whether it exited.
pub(crate) fn wait_exited(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(200);
    loop {
        if has_exited(pid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The kill-after-grace routine, used for every process group this crate stops: SIGTERM to
/// each group whose leader has not exited yet, up to `grace` (one deadline for all) for the
/// leaders to exit, then SIGKILL to every group, so that nothing a leader left behind in its
/// group survives. It never reaps a leader.
///
/// `ours(pid)` is asked right before each signal, and what it returns is held while the
/// signal is sent: for a leader that another thread may reap, it takes the lock under which
/// that thread reaps, and says `None` once the leader is reaped (its group id may then
/// belong to someone else, so it is left alone).
pub(crate) fn kill_after_grace<G>(
    leaders: &[u32],
    grace: Duration,
    ours: impl Fn(u32) -> Option<G>,
) {
    for &pid in leaders {
        if let Some(_held) = ours(pid) {
            if !has_exited(pid) {
                signal_group(pid, Signal::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + grace;
    for &pid in leaders {
        wait_exited(pid, deadline.saturating_duration_since(Instant::now()));
    }
    for &pid in leaders {
        if let Some(_held) = ours(pid) {
            signal_group(pid, Signal::SIGKILL);
        }
    }
}

/// Stops a child this thread owns and everything in its process group (see
/// [`kill_after_grace`]), then reaps it.
pub(crate) fn terminate_group(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    kill_after_grace(&[child.id()], grace, |_| Some(()));
    reap(child)
}

/// Describes how a process ended, e.g. "exited with status 3" or "was killed by signal 9
/// (SIGKILL)".
pub(crate) fn describe_status(status: Option<ExitStatus>) -> String {
    match status {
        None => "ended (status unknown)".to_string(),
        Some(st) => {
            if let Some(code) = st.code() {
                format!("exited with status {code}")
            } else if let Some(sig) = st.signal() {
                match Signal::try_from(sig) {
                    Ok(s) => format!("was killed by signal {sig} ({})", s.as_str()),
                    Err(_) => format!("was killed by signal {sig}"),
                }
            } else {
                format!("ended ({st})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::io_phrase;

    /// Starts `sh -c script` in its own group with stdout piped, and waits for its first
    /// line (the script says when it is ready).
    fn start_ready(script: &str) -> Child {
        let mut child = group_command(&["sh", "-c", script], &[], None)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        out.read_exact(&mut byte).unwrap();
        child
    }

    #[test]
    fn kill_after_grace_kills_a_group_that_ignores_term_once_the_grace_is_over() {
        // The leader and its child ignore SIGTERM (an ignored signal stays ignored across
        // exec): only the SIGKILL after the grace stops them.
        let mut child = start_ready("trap '' TERM; sleep 30 & echo ready; wait");
        let grace = Duration::from_millis(300);
        let began = Instant::now();
        kill_after_grace(&[child.id()], grace, |_| Some(()));
        assert!(
            began.elapsed() >= grace,
            "SIGKILL came before the grace was over"
        );
        assert_eq!(
            describe_status(reap(&mut child)),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn kill_after_grace_does_not_wait_out_the_grace_for_a_leader_that_obeys_term() {
        let mut child = start_ready("echo ready; exec sleep 30");
        let began = Instant::now();
        kill_after_grace(&[child.id()], Duration::from_secs(120), |_| Some(()));
        // Far below the grace: the routine returned when the leader exited.
        assert!(began.elapsed() < Duration::from_secs(60));
        assert_eq!(
            describe_status(reap(&mut child)),
            "was killed by signal 15 (SIGTERM)"
        );
    }

    #[test]
    fn kill_after_grace_leaves_a_group_that_is_no_longer_ours_alone() {
        let mut child = start_ready("trap '' TERM; echo ready; exec sleep 30");
        kill_after_grace(&[child.id()], Duration::from_millis(50), |_| None::<()>);
        assert!(
            !has_exited(child.id()),
            "a group that is not ours was signalled"
        );
        terminate_group(&mut child, Duration::ZERO);
    }

    #[test]
    fn terminate_group_kills_leader_and_reports_signal() {
        let mut child = group_command(&["sleep", "30"], &[], None).spawn().unwrap();
        let status = terminate_group(&mut child, Duration::from_secs(2));
        assert_eq!(describe_status(status), "was killed by signal 15 (SIGTERM)");
    }

    #[test]
    fn describe_exit_code() {
        let mut child = group_command(&["sh", "-c", "exit 3"], &[], None)
            .spawn()
            .unwrap();
        assert!(wait_exited(child.id(), Duration::from_secs(10)));
        // Not reaped yet: still waitable.
        assert!(has_exited(child.id()));
        let status = child.wait().ok();
        assert_eq!(describe_status(status), "exited with status 3");
    }

    #[test]
    fn check_program_finds_programs_on_path() {
        assert!(check_program("sh", None).is_ok());
        assert!(check_program("/bin/sh", None).is_ok());
        let e = check_program("herdsman-no-such-program-xyz", None).unwrap_err();
        assert_eq!(io_phrase(&e), "No such file or directory");
        let e = check_program("/", None).unwrap_err();
        assert_eq!(io_phrase(&e), "Permission denied");
        // A relative path is looked up where the child starts.
        assert!(check_program("./sh", Some(Path::new("/bin"))).is_ok());
        assert!(check_program("./sh", Some(Path::new("/"))).is_err());
    }

    #[test]
    fn check_dir_says_why_not() {
        assert!(check_dir(Path::new("/")).is_ok());
        let e = check_dir(Path::new("/herdsman-no-such-dir")).unwrap_err();
        assert_eq!(io_phrase(&e), "No such file or directory");
        let e = check_dir(Path::new("/bin/sh")).unwrap_err();
        assert_eq!(io_phrase(&e), "Not a directory");
    }

    #[test]
    fn guard_forgets_reaped_groups_and_kills_the_rest_at_end_of_input() {
        // The guard's script with its kill replaced by a print of the groups it would kill.
        let script = GUARD_SCRIPT.replace(r#"kill -s KILL -- "-$p" 2>/dev/null"#, "echo $p");
        assert_ne!(script, GUARD_SCRIPT);
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"+10\n+2\n+30\n-2\n-99\n+4\n-10\n")
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "30\n4\n");
    }

    #[test]
    fn guard_lines_are_formatted_without_allocating() {
        let mut buf = [0u8; 16];
        let len = guard_line(b'+', 0, &mut buf);
        assert_eq!(&buf[..len], b"+0\n");
        let len = guard_line(b'-', 4_194_304, &mut buf);
        assert_eq!(&buf[..len], b"-4194304\n");
        let len = guard_line(b'+', u32::MAX, &mut buf);
        assert_eq!(&buf[..len], b"+4294967295\n");
    }

    #[test]
    fn a_child_registers_its_group_before_its_program_runs() {
        // A pipe in place of the guard's: the program (`sleep`) never writes to it (the
        // descriptor is closed when it starts), so whatever is in it was written by the
        // forked child before its program ran.
        let (mut guard_reader, guard_writer) = io::pipe().unwrap();
        let (mut pid_reader, pid_writer) = io::pipe().unwrap();
        let (guard_fd, pid_fd) = (guard_writer.as_raw_fd(), pid_writer.as_raw_fd());
        let mut cmd = group_command(&["sleep", "30"], &[], None);
        // SAFETY: as in `spawn_registered`.
        unsafe {
            cmd.pre_exec(move || register_in_child(guard_fd, pid_fd));
        }
        let mut child = cmd.spawn().unwrap();
        drop((guard_writer, pid_writer));
        let mut line = String::new();
        guard_reader.read_to_string(&mut line).unwrap();
        assert_eq!(line, format!("+{}\n", child.id()));
        let mut pid = [0u8; 4];
        pid_reader.read_exact(&mut pid).unwrap();
        assert_eq!(i32::from_ne_bytes(pid) as u32, child.id());
        terminate_group(&mut child, Duration::from_secs(2));
    }

    #[test]
    fn command_display() {
        assert_eq!(WorkerCommand::shell("cat | cat").display(), "cat | cat");
        assert_eq!(
            WorkerCommand::shell("cat").to_argv(),
            vec!["sh".to_string(), "-c".into(), "cat".into()]
        );
    }
}
