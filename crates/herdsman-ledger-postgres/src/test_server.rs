//! A throwaway PostgreSQL server for tests and benchmarks: `initdb --auth=trust` in a temporary
//! directory, `pg_ctl start` on a free loopback port with its socket in that directory, and
//! `pg_ctl stop` when the handle drops (also while a failing test unwinds).
//!
//! It must never touch a server it did not start: every file lives in its own temporary
//! directory and it listens on 127.0.0.1 only. Available with the `test-support` feature.
//!
//! The server binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/*/bin`,
//! the newest version found), or from the directory in `HERDSMAN_PG_BIN`. As root (the CI
//! machine), `initdb` and `pg_ctl` run as the `postgres` user through `runuser`, because the
//! server refuses to run as root.
//!
//! ```no_run
//! use herdsman_ledger_postgres::test_server::TestServer;
//! let Some(server) = TestServer::start_or_skip("my_test") else { return };
//! let url = server.url(); // postgres://postgres@127.0.0.1:PORT/postgres
//! # drop(url);
//! ```

use std::fmt;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Settings every throwaway server gets: loopback only, few connections, small memory.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "'127.0.0.1'"),
    ("max_connections", "60"),
    ("shared_buffers", "'32MB'"),
    ("log_min_messages", "'warning'"),
    ("log_statement", "'none'"),
];

/// Settings of [`TestServer::start`]: tests check behaviour, not durability against a power
/// cut, so the server does not fsync (a process crash or restart still loses nothing: the WAL
/// is in the operating system's cache).
pub const FAST_SETTINGS: &[(&str, &str)] = &[("fsync", "off"), ("full_page_writes", "off")];

/// A running throwaway PostgreSQL server, stopped and deleted when dropped.
pub struct TestServer {
    /// Holds the data directory, the socket and the log; deleted on drop.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run `initdb`/`pg_ctl` through `runuser -u postgres` (we are root).
    as_postgres: bool,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish()
    }
}

impl TestServer {
    /// Starts a server with [`FAST_SETTINGS`], or says why it cannot (no PostgreSQL binaries,
    /// no `postgres` user, `initdb` or `pg_ctl` failed).
    pub fn start() -> Result<TestServer, String> {
        TestServer::start_with(FAST_SETTINGS)
    }

    /// Starts a server with the given `postgresql.conf` settings (values as written in the
    /// file, strings quoted) on top of the base ones. `&[]` keeps PostgreSQL's defaults, fsync
    /// included, for honest benchmarks.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<TestServer, String> {
        let bin = find_bin()?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("herdsman-pg-")
            .tempdir()
            .map_err(|e| format!("could not create a temporary directory: {e}"))?;
        if as_postgres {
            let (uid, gid) = postgres_user()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("could not give {} to postgres: {e}", dir.path().display()))?;
        }
        let mut server = TestServer {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        server.initdb()?;
        std::fs::create_dir_all(server.socket_dir())
            .map_err(|e| format!("could not create the socket directory: {e}"))?;
        if as_postgres {
            let (uid, gid) = postgres_user()?;
            std::os::unix::fs::chown(server.socket_dir(), Some(uid), Some(gid))
                .map_err(|e| format!("could not give the socket directory to postgres: {e}"))?;
        }
        // A free port can be taken by someone else between our probe and the server's bind:
        // try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            server.write_config(settings)?;
            match server.pg_ctl(&["start", "-w", "-t", "120"]) {
                Ok(_) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(format!("the server did not start: {last}"))
    }

    /// Starts a server, or returns `None` after printing why when PostgreSQL is not available.
    /// When the environment variable `CI` is set, a server that cannot start fails the test
    /// (panics) instead: CI installs PostgreSQL, so skipping there would hide a broken setup.
    pub fn start_or_skip(test: &str) -> Option<TestServer> {
        match TestServer::start() {
            Ok(server) => Some(server),
            Err(why) if std::env::var_os("CI").is_some() => {
                panic!("{test}: no throwaway PostgreSQL server ({why}); CI must install the postgresql package (see .ci/run)")
            }
            Err(why) => {
                eprintln!(
                    "skipping {test}: no throwaway PostgreSQL server ({why}); install the postgresql package to run it"
                );
                None
            }
        }
    }

    /// The server's URL, for the `postgres` superuser and database over TCP on 127.0.0.1.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its URL (each test can have its own).
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let out = self.run(
            &self.bin.join("psql"),
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                &format!("CREATE DATABASE \"{name}\""),
            ],
        )?;
        drop(out);
        Ok(self.url_for(name))
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every connection is cut, committed data
    /// stays. Waits until the server accepts connections again.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "120"])
            .map(drop)
    }

    /// Stops the server (`pg_ctl stop -m fast`), cutting every connection.
    pub fn stop(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "120"])
            .map(drop)
    }

    /// Starts the server again after [`TestServer::stop`], on the same port.
    pub fn start_again(&self) -> Result<(), String> {
        self.pg_ctl(&["start", "-w", "-t", "120"]).map(drop)
    }

    /// Waits until the server answers `pg_isready`, up to `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn initdb(&self) -> Result<(), String> {
        let data = self.data_dir();
        self.run(
            &self.bin.join("initdb"),
            &[
                "-D",
                path_str(&data)?,
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        .map(drop)
    }

    fn write_config(&self, settings: &[(&str, &str)]) -> Result<(), String> {
        let path = self.data_dir().join("postgresql.auto.conf");
        let mut text = String::from("# written by herdsman's throwaway test server\n");
        text.push_str(&format!("port = {}\n", self.port));
        text.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            path_str(&self.socket_dir())?
        ));
        for (k, v) in BASE_SETTINGS.iter().chain(settings) {
            text.push_str(&format!("{k} = {v}\n"));
        }
        std::fs::write(&path, text).map_err(|e| format!("could not write {}: {e}", path.display()))
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, String> {
        let data = self.data_dir();
        let log = self.log_file();
        let mut all = vec!["-D", path_str(&data)?, "-l", path_str(&log)?];
        all.extend_from_slice(args);
        self.run(&self.bin.join("pg_ctl"), &all).map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}; server log: {}", tail.join(" | "))
        })
    }

    /// Runs a server program, as the `postgres` user when we are root.
    fn run(&self, program: &Path, args: &[&str]) -> Result<Output, String> {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args).current_dir(self.dir.path());
        let out = cmd
            .output()
            .map_err(|e| format!("could not run {}: {e}", program.display()))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "{} {} failed ({}): {}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Immediate: nothing to keep, and a test that failed may have left clients connected.
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]);
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn find_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("HERDSMAN_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if dir.join("pg_ctl").is_file() {
            Ok(dir)
        } else {
            Err(format!("HERDSMAN_PG_BIN={} has no pg_ctl", dir.display()))
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|_| format!("{} does not exist", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no {}/*/bin/pg_ctl", root.display()))
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `postgres` user's uid and gid.
fn postgres_user() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("could not run id: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "there is no postgres user (install the postgresql package)".to_string())
    };
    Ok((id("-u")?, id("-g")?))
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("could not find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("could not find a free port: {e}"))
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}
