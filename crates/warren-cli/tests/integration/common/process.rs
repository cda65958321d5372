//! Bounded commands and child processes that are killed by PID when their guard drops.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often bounded loops poll.
pub const POLL: Duration = Duration::from_millis(50);

/// The result of a command run with a time limit.
#[derive(Debug)]
pub struct CmdOutput {
    /// `None` if the command had to be killed at its deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, killing it (by its PID, through its `Child`) if it is still
/// running after `timeout`. stdin is closed.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    // Readers end when the pipes close, which happens at the latest when the child is killed
    // (the commands run here do not leave daemons holding the pipes).
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{command}`: {e}"),
        }
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    CmdOutput {
        status,
        stdout,
        stderr,
        command,
    }
}

/// Runs a setup command (default limit 20 s) and panics with its output if it fails.
pub fn run_ok<S: AsRef<OsStr>>(argv: &[S]) -> String {
    let (prog, args) = argv.split_first().expect("non-empty argv");
    let out = run_bounded(Command::new(prog).args(args), Duration::from_secs(20));
    if !out.success() {
        panic!(
            "`{}` failed ({:?}):\nstdout: {}\nstderr: {}",
            out.command, out.status, out.stdout, out.stderr
        );
    }
    out.stdout
}

/// A background process whose stdout and stderr go to a log file. It is killed (SIGKILL,
/// by its own PID) and reaped when the guard drops, unless it already exited.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with its output appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let command = describe(cmd);
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open log {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (`{command}`): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            exit: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far (lossy UTF-8).
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// `Some(status)` once the process has exited (it is reaped here).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.exit = Some(st);
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Waits until a log line contains one of `patterns`; returns (index, line). Fails if
    /// the deadline passes or the process exits without printing it.
    pub fn wait_for_any(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String), String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Check exit before reading, so a line printed just before exiting is seen.
            let exited = self.exited();
            let log = self.log();
            for line in log.lines() {
                if let Some(i) = patterns.iter().position(|p| line.contains(p)) {
                    return Ok((i, line.to_string()));
                }
            }
            if let Some(st) = exited {
                return Err(format!(
                    "{} exited ({st}) without printing any of {patterns:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not print any of {patterns:?} within {timeout:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                ));
            }
            thread::sleep(POLL);
        }
    }

    pub fn wait_for_line(&mut self, pattern: &str, timeout: Duration) -> Result<String, String> {
        self.wait_for_any(&[pattern], timeout).map(|(_, l)| l)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM (by PID), then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if self.is_running() {
            // The child is not reaped yet, so its PID cannot have been reused.
            let _ = run_bounded(
                Command::new("kill")
                    .arg("-s")
                    .arg("TERM")
                    .arg(self.pid().to_string()),
                Duration::from_secs(5),
            );
            if self.wait_exit(grace).is_none() {
                self.kill();
            }
        }
    }

    /// SIGKILL (by PID) and reap, bounded.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            self.wait_exit(Duration::from_secs(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` until it returns `Some`, at most for `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// The resident set size of process `pid` in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
