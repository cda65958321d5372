//! Helpers for the state-directory server tests (`zero_config`, `auth_modes`, `revocation`),
//! on top of `common` (namespaces, processes, the traffic helper):
//!
//! * [`Warren`]: `warren pki|user|profile ... --state-dir DIR` run to completion (bounded);
//! * [`ZeroServer`]: `warren server --state-dir DIR` (no config) in the lab's server
//!   namespace, restartable;
//! * [`Profiles`]: exported `.ovpn` profiles, tweaked only where a test needs it (a password
//!   file for `auth-user-pass`, a tun name);
//! * stock `openvpn` clients started from a profile in a given namespace, so several clients
//!   can share one source address;
//! * [`BgTransfer`]: a TCP transfer through the tunnel that runs while the test revokes or
//!   disables its user.
//!
//! Everything that sends traffic runs inside the lab's namespaces; every wait is bounded.

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::helper::SINK_READY;
use crate::common::lab::{CONNECTED, Client, Lab, WARREN_BIN, read_kv, spawn_helper};
use crate::common::netns::{Netns, unique_name};
use crate::common::process::{CmdOutput, Proc, poll_until, run_bounded};

/// The UDP port the zero-config servers of these tests listen on.
pub const PORT: u16 = 1194;
/// What the stock client logs when the server refuses it.
pub const AUTH_FAILED: &str = "AUTH_FAILED";
/// What the stock client logs when the server kicks it with `RESTART`.
pub const PUSHED_RESET: &str = "Connection reset command was pushed by server";

/// The `warren` admin commands on one state directory.
#[derive(Debug, Clone)]
pub struct Warren {
    pub state: PathBuf,
}

impl Warren {
    pub fn new(state: &Path) -> Warren {
        Warren {
            state: state.to_path_buf(),
        }
    }

    /// Runs `warren ARGS --state-dir STATE` (60 s limit), with `stdin` piped in if given.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> CmdOutput {
        let mut cmd = Command::new(WARREN_BIN);
        cmd.args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .env_remove("WARREN_STATE_DIR")
            .env_remove("RUST_LOG");
        match stdin {
            None => run_bounded(&mut cmd, Duration::from_secs(60)),
            Some(input) => {
                // run_bounded closes stdin; feed it through a file instead.
                let f = tempfile_with(input);
                cmd.stdin(Stdio::from(fs::File::open(&f).expect("open stdin file")));
                let out = run_piped(&mut cmd, Duration::from_secs(60));
                let _ = fs::remove_file(&f);
                out
            }
        }
    }

    /// Like [`Warren::run`], panicking with the output on failure.
    pub fn ok(&self, args: &[&str]) -> CmdOutput {
        let out = self.run(args, None);
        assert!(
            out.success(),
            "warren {args:?} failed:\n{}{}",
            out.stdout,
            out.stderr
        );
        out
    }

    /// `warren user add NAME --no-password EXTRA...`
    pub fn add_user(&self, name: &str, extra: &[&str]) {
        let mut args = vec!["user", "add", name, "--no-password"];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// `warren user add NAME --password-stdin EXTRA...`
    pub fn add_user_with_password(&self, name: &str, password: &str, extra: &[&str]) {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        args.extend_from_slice(extra);
        let out = self.run(&args, Some(&format!("{password}\n")));
        assert!(
            out.success(),
            "warren {args:?} failed:\n{}{}",
            out.stdout,
            out.stderr
        );
    }

    /// `warren profile export NAME --remote REMOTE EXTRA...`: the profile text.
    pub fn export(&self, name: &str, remote: &str, extra: &[&str]) -> String {
        let mut args = vec!["profile", "export", name, "--remote", remote];
        args.extend_from_slice(extra);
        self.ok(&args).stdout
    }
}

/// A file in the temp directory with `text` (for stdin).
fn tempfile_with(text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "warren-it-stdin-{}-{}",
        std::process::id(),
        unique_name("in", 'x')
    ));
    let mut f = fs::File::create(&p).expect("create stdin file");
    f.write_all(text.as_bytes()).expect("write stdin file");
    p
}

/// `run_bounded` for a command whose stdin is already set.
fn run_piped(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren");
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(st) => break Some(st),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let out = child.wait_with_output().expect("output");
    CmdOutput {
        status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command: "warren".into(),
    }
}

/// `warren server --state-dir STATE` without a config, in the lab's server namespace.
#[derive(Debug)]
pub struct ZeroServer {
    pub proc: Proc,
    pub dev: String,
}

impl ZeroServer {
    /// Starts the server with `extra` options and waits until its UDP port is bound (at most
    /// 60 s: the first run may generate keys). Panics with the log if it exits.
    pub fn start(lab: &Lab, state: &Path, extra: &[&str]) -> ZeroServer {
        let mut server = ZeroServer::spawn(lab, state, extra, &[]);
        let (proc, ns) = (&mut server.proc, &lab.server_ns);
        poll_until(Duration::from_secs(60), || {
            (proc.exited().is_some() || ns.udp_port_bound(PORT)).then_some(())
        });
        if let Some(st) = proc.exited() {
            panic!(
                "warren server exited at startup ({st}):\n{}",
                proc.log_tail(40)
            );
        }
        assert!(
            ns.udp_port_bound(PORT),
            "warren server did not bind UDP {PORT}:\n{}",
            proc.log_tail(40)
        );
        server
    }

    /// Starts `warren server --state-dir STATE --dev DEV --port PORT EXTRA...` with
    /// `RUST_LOG=info` and `env` (log `<dev>-server.log`); does not wait.
    pub fn spawn(lab: &Lab, state: &Path, extra: &[&str], env: &[(&str, String)]) -> ZeroServer {
        let dev = unique_name("tun", 's');
        let log = lab.dir().join(format!("{dev}-server.log"));
        let port = PORT.to_string();
        let mut argv: Vec<&str> = vec![
            WARREN_BIN,
            "server",
            "--state-dir",
            state.to_str().expect("UTF-8 path"),
            "--dev",
            &dev,
            "--port",
            &port,
        ];
        argv.extend_from_slice(extra);
        let mut env_all = vec![("RUST_LOG", "info".to_string())];
        env_all.extend_from_slice(env);
        let proc = lab
            .server_ns
            .spawn_env("warren server", &argv, &env_all, lab.dir(), &log);
        ZeroServer { proc, dev }
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Waits for a server log line containing `pattern`.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> String {
        self.proc
            .wait_for_line(pattern, timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGTERM, bounded.
    pub fn stop(mut self) {
        self.proc.terminate(Duration::from_secs(10));
    }
}

/// Writes `profile` for `name` into the lab directory with its `dev` line set to a unique
/// name (so the tests can find the tun device) and, when `credentials` are given,
/// `auth-user-pass` pointing at a file holding them. Returns (profile path, dev name).
pub fn write_profile(
    lab: &Lab,
    name: &str,
    profile: &str,
    credentials: Option<(&str, &str)>,
) -> (PathBuf, String) {
    let dev = unique_name("tun", 'c');
    let mut text = String::with_capacity(profile.len() + 128);
    let mut has_auth = false;
    for line in profile.lines() {
        if line == "dev tun" {
            text.push_str(&format!("dev {dev}\n"));
        } else if line == "auth-user-pass" {
            has_auth = true;
            if let Some((u, p)) = credentials {
                let f = lab.dir().join(format!("{name}-{dev}.pass"));
                fs::write(&f, format!("{u}\n{p}\n")).expect("write password file");
                text.push_str(&format!("auth-user-pass {}\n", f.display()));
            } else {
                text.push_str("auth-user-pass\n");
            }
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    if let (Some((u, p)), false) = (credentials, has_auth) {
        let f = lab.dir().join(format!("{name}-{dev}.pass"));
        fs::write(&f, format!("{u}\n{p}\n")).expect("write password file");
        text.push_str(&format!("auth-user-pass {}\n", f.display()));
    }
    let path = lab.dir().join(format!("{name}-{dev}.ovpn"));
    fs::write(&path, text).expect("write profile");
    (path, dev)
}

/// Starts the stock `openvpn` client with `profile` in namespace `ns` (not waiting).
pub fn start_openvpn(lab: &Lab, ns: &Netns, name: &str, profile: &Path) -> Proc {
    let log = lab.dir().join(format!("{name}.log"));
    ns.spawn_env(
        name,
        &["openvpn", "--config", profile.to_str().expect("UTF-8")],
        &[],
        lab.dir(),
        &log,
    )
}

/// A stock client of user `user` in a new namespace, connected (panics with both logs if it
/// does not connect within 20 s).
pub fn connect(
    lab: &mut Lab,
    server: &ZeroServer,
    w: &Warren,
    name: &str,
    user: &str,
    credentials: Option<(&str, &str)>,
    export_extra: &[&str],
) -> Client {
    let mut c = start_client(lab, w, name, user, credentials, export_extra);
    if let Err(e) = c.wait_connected(Duration::from_secs(20)) {
        panic!(
            "{name} did not connect: {e}\nserver log:\n{}",
            crate::common::process::tail(&server.log(), 40)
        );
    }
    c
}

/// Like [`connect`] without waiting.
pub fn start_client(
    lab: &mut Lab,
    w: &Warren,
    name: &str,
    user: &str,
    credentials: Option<(&str, &str)>,
    export_extra: &[&str],
) -> Client {
    start_profile(lab, name, credentials, |srv| {
        w.export(user, srv, export_extra)
    })
}

/// A stock client in a new namespace with the profile `profile(server address)`, written
/// by [`write_profile`] (does not wait).
pub fn start_profile(
    lab: &mut Lab,
    name: &str,
    credentials: Option<(&str, &str)>,
    profile: impl FnOnce(&str) -> String,
) -> Client {
    let (ns, srv, cli) = lab.new_peer_ns();
    let (path, dev) = write_profile(lab, name, &profile(&srv), credentials);
    let proc = start_openvpn(lab, &ns, name, &path);
    Client {
        proc,
        ns,
        name: name.to_string(),
        dev,
        server_underlay: srv,
        client_underlay: cli,
        tun_addr: None,
    }
}

/// Waits until a stock client is refused: its log shows `AUTH_FAILED` and it exits (it does
/// not retry after an authentication failure). Returns its log.
pub fn expect_auth_failed(proc: &mut Proc, timeout: Duration) -> String {
    if let Err(e) = proc.wait_for_line(AUTH_FAILED, timeout) {
        panic!("expected AUTH_FAILED: {e}");
    }
    let log = proc.log();
    assert!(
        !log.contains(CONNECTED),
        "{} connected although it was refused:\n{}",
        proc.name(),
        proc.log_tail(30)
    );
    assert!(
        proc.wait_exit(Duration::from_secs(15)).is_some(),
        "{} still runs after AUTH_FAILED:\n{}",
        proc.name(),
        proc.log_tail(20)
    );
    log
}

/// Like [`expect_auth_failed`] for a client that was connected before: only the log after
/// the first line containing `marker` (e.g. [`PUSHED_RESET`]) counts.
pub fn expect_auth_failed_after(proc: &mut Proc, marker: &str, timeout: Duration) {
    let after = |log: &str| -> Option<String> { log.find(marker).map(|i| log[i..].to_owned()) };
    let seen = poll_until(timeout, || {
        after(&proc.log()).filter(|rest| rest.contains(AUTH_FAILED))
    });
    let Some(rest) = seen else {
        panic!(
            "{}: no AUTH_FAILED after {marker:?}:\n{}",
            proc.name(),
            proc.log_tail(30)
        );
    };
    assert!(
        !rest.contains(CONNECTED),
        "{} reconnected although it must be refused:\n{}",
        proc.name(),
        proc.log_tail(30)
    );
    assert!(
        proc.wait_exit(Duration::from_secs(15)).is_some(),
        "{} still runs after AUTH_FAILED:\n{}",
        proc.name(),
        proc.log_tail(20)
    );
}

/// The server's tun address for `--network` 10.8.0.0/24.
pub const SERVER_VPN_IP: &str = "10.8.0.1";

/// A TCP transfer (traffic helper sink + source) running in the background.
#[derive(Debug)]
pub struct BgTransfer {
    pub sink: Proc,
    pub source: Proc,
    sink_result: PathBuf,
    source_result: PathBuf,
}

impl BgTransfer {
    #[allow(clippy::too_many_arguments)]
    /// Sends for `duration` at `rate_bps` from `from` to `to_addr:port` (a sink in `to`).
    pub fn start(
        lab: &Lab,
        tag: &str,
        from: &Netns,
        to: &Netns,
        to_addr: &str,
        port: u16,
        duration: Duration,
        rate_bps: u64,
    ) -> BgTransfer {
        let deadline_ms = (duration + Duration::from_secs(20)).as_millis().to_string();
        let (mut sink, sink_result) = spawn_helper(
            lab.dir(),
            to,
            &format!("{tag}-sink"),
            "sink",
            &[
                ("LISTEN", format!("0.0.0.0:{port}")),
                ("DEADLINE_MS", deadline_ms.clone()),
            ],
        );
        if let Err(e) = sink.wait_for_line(SINK_READY, Duration::from_secs(15)) {
            panic!("sink did not start: {e}");
        }
        let (source, source_result) = spawn_helper(
            lab.dir(),
            from,
            &format!("{tag}-source"),
            "source",
            &[
                ("CONNECT", format!("{to_addr}:{port}")),
                ("DEADLINE_MS", deadline_ms),
                ("SEED", u64::from(port).to_string()),
                ("DURATION_MS", duration.as_millis().to_string()),
                ("RATE_BPS", rate_bps.to_string()),
            ],
        );
        BgTransfer {
            sink,
            source,
            sink_result,
            source_result,
        }
    }

    /// Waits for both ends (bounded) and returns (source, sink) results.
    pub fn finish(
        mut self,
        timeout: Duration,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let src = self.source.wait_exit(timeout);
        let snk = self.sink.wait_exit(Duration::from_secs(15));
        assert!(
            src.is_some_and(|s| s.success()),
            "source failed ({src:?}):\n{}",
            self.source.log_tail(20)
        );
        assert!(
            snk.is_some_and(|s| s.success()),
            "sink failed ({snk:?}):\n{}",
            self.sink.log_tail(20)
        );
        (
            read_kv(&self.source_result).unwrap_or_default(),
            read_kv(&self.sink_result).unwrap_or_default(),
        )
    }

    /// Waits for the transfer and checks every byte arrived unchanged.
    pub fn assert_intact(self, timeout: Duration) {
        let (s, r) = self.finish(timeout);
        assert!(
            s.get("bytes").is_some_and(|b| b != "0"),
            "nothing sent: {s:?}"
        );
        assert_eq!(r.get("complete").map(String::as_str), Some("true"), "{r:?}");
        assert_eq!(s.get("bytes"), r.get("bytes"), "byte counts: {s:?} {r:?}");
        assert_eq!(s.get("sha256"), r.get("sha256"), "hashes: {s:?} {r:?}");
    }
}

/// The lines of `log` containing `pattern`, joined (for messages).
pub fn lines_with(log: &str, pattern: &str) -> String {
    log.lines()
        .filter(|l| l.contains(pattern))
        .collect::<Vec<_>>()
        .join("\n")
}
