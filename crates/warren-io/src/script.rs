//! Running a user script (`up`, `client-connect`, `auth-user-pass-verify`, ...) the way
//! OpenVPN does (misc.c `openvpn_execve_check`, run_command.c): the command line is split
//! into words without a shell, the extra arguments are appended, the program gets exactly
//! the given environment (nothing inherited), stdin is `/dev/null` and stdout/stderr are
//! ours. Unlike OpenVPN, which waits without limit, a script that runs past its timeout is
//! killed (its whole process group, so `sleep` children go too) and counts as a failure.
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How a script ended.
#[derive(Debug)]
pub enum ScriptStatus {
    /// It exited with this code (0 is success).
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// It ran past the timeout and was killed.
    TimedOut,
    /// It could not be started (no such file, not executable, ...).
    SpawnFailed(io::Error),
}

impl ScriptStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        matches!(self, ScriptStatus::Exited(0))
    }
}

impl std::fmt::Display for ScriptStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptStatus::Exited(c) => write!(f, "exit status {c}"),
            ScriptStatus::Signaled(s) => write!(f, "killed by signal {s}"),
            ScriptStatus::TimedOut => f.write_str("timed out and was killed"),
            ScriptStatus::SpawnFailed(e) => write!(f, "could not be started: {e}"),
        }
    }
}

/// How often a running script is looked at.
const POLL: Duration = Duration::from_millis(5);

/// Runs `argv[0]` with `argv[1..]`, exactly the variables `env`, and waits at most
/// `timeout`. Blocks the calling thread: call it from a worker thread, never from a loop
/// that moves packets.
pub fn run_script(argv: &[String], env: &[(String, String)], timeout: Duration) -> ScriptStatus {
    let Some((program, args)) = argv.split_first() else {
        return ScriptStatus::SpawnFailed(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty command",
        ));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        // Its own process group, so a timeout can end everything it started.
        .process_group(0);
    let clock = match crate::Clock::new() {
        Ok(c) => c,
        Err(e) => return ScriptStatus::SpawnFailed(e),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ScriptStatus::SpawnFailed(e),
    };
    let start = clock.now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match (status.code(), status.signal()) {
                    (Some(c), _) => ScriptStatus::Exited(c),
                    (None, Some(s)) => ScriptStatus::Signaled(s),
                    (None, None) => ScriptStatus::Exited(-1),
                };
            }
            Ok(None) => {}
            Err(e) => return ScriptStatus::SpawnFailed(e),
        }
        if clock.now().saturating_duration_since(start) >= timeout {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return ScriptStatus::TimedOut;
        }
        std::thread::sleep(POLL);
    }
}

/// SIGKILL to the process group `pgid` (the script and its children).
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 0 {
        return;
    }
    // SAFETY: kill(2) takes plain integers; a negative pid names the process group the
    // script leads (it was started with process_group(0)), which only it and its children
    // are in.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn exit_codes_and_environment() {
        let env = vec![("common_name".to_owned(), "alice".to_owned())];
        let t = Duration::from_secs(10);
        assert!(run_script(&sh("test \"$common_name\" = alice"), &env, t).success());
        assert!(matches!(
            run_script(&sh("exit 3"), &env, t),
            ScriptStatus::Exited(3)
        ));
        // Nothing is inherited (the shell sets its own PATH, so look at HOME).
        assert!(run_script(&sh("test -z \"$HOME$USER\""), &env, t).success());
        assert!(matches!(
            run_script(&["/nonexistent/script".to_owned()], &env, t),
            ScriptStatus::SpawnFailed(_)
        ));
    }

    #[test]
    fn a_hanging_script_is_killed() {
        let clock = crate::Clock::new().expect("clock");
        let start = clock.now();
        let s = run_script(
            &sh("/bin/sleep 30; exit 0"),
            &[],
            Duration::from_millis(200),
        );
        assert!(matches!(s, ScriptStatus::TimedOut), "{s}");
        assert!(!s.success());
        assert!(clock.now().saturating_duration_since(start) < Duration::from_secs(5));
    }
}
