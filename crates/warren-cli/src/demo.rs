//! `warren demo`: warren end to end on one machine, in two network namespaces.
//!
//! What it does, in order: checks it runs as root with `ip` available; creates namespaces
//! `wd<pid>s` and `wd<pid>c` joined by a veth pair on 198.18.0.0/30; generates a throwaway
//! PKI in memory (ECDSA P-256 CA, a server certificate with EKU serverAuth, a client
//! certificate with EKU clientAuth) and a tls-crypt key; writes `server.conf` and
//! `client.ovpn` into a temporary directory; starts `warren server` in one namespace and
//! `warren client` in the other (this very executable, through `ip netns exec`); waits for
//! the tunnel; pings through it; measures throughput for a few seconds (iperf3 when
//! installed, else a built-in TCP stream between two more copies of this executable); and
//! prints a summary. Everything it created is a guard removed on drop, so an error, a
//! panic or Ctrl-C (read from a signalfd while waiting) leaves nothing behind. Every wait
//! is bounded.

// The demo orchestrates processes and measures wall time like a test harness; it is not
// an engine, so it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use warren_io::Signals;

const SERVER_UNDERLAY: &str = "198.18.0.1";
const CLIENT_UNDERLAY: &str = "198.18.0.2";
const SERVER_TUN: &str = "10.89.0.1";
const PORT: u16 = 1194;
const BLAST_PORT: u16 = 5201;
const UP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// Options of `warren demo`.
#[derive(Debug, Clone)]
pub struct DemoFlags {
    /// Seconds of throughput measurement.
    pub seconds: u32,
    /// Skip iperf3 even when installed (use the built-in TCP stream).
    pub builtin: bool,
    pub verbose: u8,
}

pub fn run(flags: &DemoFlags) -> Result<()> {
    // Ctrl-C and SIGTERM become readable events, so the guards below always run.
    let signals = Signals::new().context("setting up signal handling")?;
    preflight()?;
    let exe = std::env::current_exe().context("locating the warren executable")?;
    let pid = std::process::id();
    let started = Instant::now();

    let dir = TempDir::new(&std::env::temp_dir().join(format!("warren-demo-{pid}")))?;
    println!(
        "warren demo: building two network namespaces, a throwaway PKI and a tunnel between them"
    );
    let server_ns = Netns::new(&format!("wd{pid}s"))?;
    let client_ns = Netns::new(&format!("wd{pid}c"))?;
    let (veth_s, veth_c) = (format!("wd{pid}a"), format!("wd{pid}b"));
    ip(&[
        "link",
        "add",
        &veth_s,
        "netns",
        &server_ns.name,
        "type",
        "veth",
        "peer",
        "name",
        &veth_c,
        "netns",
        &client_ns.name,
    ])?;
    ip(&[
        "-n",
        &server_ns.name,
        "addr",
        "add",
        &format!("{SERVER_UNDERLAY}/30"),
        "dev",
        &veth_s,
    ])?;
    ip(&[
        "-n",
        &client_ns.name,
        "addr",
        "add",
        &format!("{CLIENT_UNDERLAY}/30"),
        "dev",
        &veth_c,
    ])?;
    ip(&["-n", &server_ns.name, "link", "set", &veth_s, "up"])?;
    ip(&["-n", &client_ns.name, "link", "set", &veth_c, "up"])?;

    let files = write_configs(dir.path(), pid)?;

    let verbosity: Vec<&str> = if flags.verbose > 0 {
        vec!["-v"]
    } else {
        vec![]
    };
    let exe_s = exe.to_string_lossy().into_owned();
    let mut server_argv = vec![
        exe_s.as_str(),
        "server",
        "--config",
        files.server_conf.to_str().unwrap_or_default(),
    ];
    server_argv.extend(&verbosity);
    let mut server = server_ns.spawn(
        "warren server",
        &server_argv,
        &dir.path().join("server.log"),
    )?;
    wait_for_line(
        &signals,
        &mut server,
        "listening on udp",
        Duration::from_secs(15),
    )?;

    let t0 = Instant::now();
    let mut client_argv = vec![
        exe_s.as_str(),
        "client",
        files.client_ovpn.to_str().unwrap_or_default(),
    ];
    client_argv.extend(&verbosity);
    let mut client = client_ns.spawn(
        "warren client",
        &client_argv,
        &dir.path().join("client.log"),
    )?;
    let up = wait_for_line(&signals, &mut client, "warren client up", UP_TIMEOUT).with_context(
        || {
            format!(
                "the tunnel did not come up; server log:\n{}",
                server.tail(15)
            )
        },
    )?;
    let handshake = t0.elapsed();
    println!(
        "  {}",
        up.split("warren client up: ")
            .nth(1)
            .map_or(up.as_str(), str::trim)
    );

    let ping = ping(&signals, &client_ns)?;
    let throughput = if !flags.builtin && have("iperf3") {
        iperf(&signals, &server_ns, &client_ns, dir.path(), flags.seconds)?
    } else {
        builtin_blast(
            &signals,
            &exe_s,
            &server_ns,
            &client_ns,
            dir.path(),
            flags.seconds,
        )?
    };

    // Leave in order: the client (explicit-exit-notify, routes restored), then the server.
    client.terminate(Duration::from_secs(5));
    server.terminate(Duration::from_secs(5));
    let clean_exit = client.exit_ok() && server.exit_ok();

    let mut s = String::new();
    let _ = writeln!(s, "\nwarren demo summary");
    let _ = writeln!(
        s,
        "  tunnel up after     {:.0} ms (process start, handshake, push, tun and routes)",
        handshake.as_secs_f64() * 1e3
    );
    let _ = writeln!(s, "  ping through tunnel {ping}");
    let _ = writeln!(s, "  throughput          {throughput}");
    let _ = writeln!(
        s,
        "  clean shutdown      {}",
        if clean_exit {
            "yes"
        } else {
            "no (see the logs above)"
        }
    );
    let _ = write!(
        s,
        "  total               {:.1} s; namespaces, veth pair and files removed",
        started.elapsed().as_secs_f64()
    );
    println!("{s}");
    if !clean_exit {
        eprintln!(
            "client log:\n{}\nserver log:\n{}",
            client.tail(20),
            server.tail(20)
        );
    }
    drop(client);
    drop(server);
    drop(client_ns);
    drop(server_ns);
    drop(dir);
    if !clean_exit {
        bail!("a warren process did not exit cleanly");
    }
    Ok(())
}

/// Root, `ip`, `ping`.
fn preflight() -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        bail!(
            "`warren demo` creates network namespaces and tun devices: run it as root (sudo warren demo)"
        );
    }
    if !have("ip") {
        bail!("`warren demo` needs the `ip` command: install iproute2");
    }
    if !have("ping") {
        bail!("`warren demo` needs the `ping` command: install iputils-ping");
    }
    Ok(())
}

fn have(cmd: &str) -> bool {
    [
        "/usr/sbin",
        "/sbin",
        "/usr/bin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ]
    .iter()
    .any(|d| Path::new(d).join(cmd).exists())
}

/// Runs `ip ARGS` (bounded by the command itself) and fails with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip`")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A temporary directory, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(path: &Path) -> Result<TempDir> {
        let _ = fs::remove_dir_all(path);
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir {
            path: path.to_path_buf(),
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A network namespace with loopback up, deleted on drop (with its veth end).
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name]).context("creating a network namespace")?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .args(argv)
            .stdin(Stdio::null());
        c
    }

    /// Starts a background process in the namespace with its output in `log`.
    fn spawn(&self, what: &str, argv: &[&str], log: &Path) -> Result<Proc> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = self
            .command(argv)
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            what: what.to_owned(),
            child,
            log: log.to_path_buf(),
            status: None,
        })
    }

    /// Runs a command in the namespace to completion, killing it after `limit`.
    fn output(&self, signals: &Signals, argv: &[&str], limit: Duration) -> Result<String> {
        let log = std::env::temp_dir().join(format!(
            "warren-demo-{}-{}.out",
            std::process::id(),
            argv[0].replace('/', "_")
        ));
        let mut p = self.spawn(argv[0], argv, &log)?;
        let r = p.wait(signals, limit);
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        match r? {
            Some(true) => Ok(text),
            Some(false) => bail!("`{}` failed:\n{}", argv.join(" "), text.trim()),
            None => bail!(
                "`{}` did not finish within {} s",
                argv.join(" "),
                limit.as_secs()
            ),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// A child process, terminated (by its own PID) on drop.
struct Proc {
    what: String,
    child: Child,
    log: PathBuf,
    status: Option<std::process::ExitStatus>,
}

impl Proc {
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.status = Some(st);
        }
        self.status
    }

    fn exit_ok(&mut self) -> bool {
        self.exited().is_some_and(|s| s.success())
    }

    fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits for the process to exit: `Some(success)`, or `None` after `limit`.
    fn wait(&mut self, signals: &Signals, limit: Duration) -> Result<Option<bool>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.exited() {
                return Ok(Some(st.success()));
            }
            check_signals(signals)?;
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn terminate(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // Not reaped yet, so the PID is still this child's.
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(3));
    }
}

fn check_signals(signals: &Signals) -> Result<()> {
    if let Some(sig) = signals.read().context("reading signals")? {
        bail!("interrupted by {}; cleaning up", sig.name());
    }
    Ok(())
}

/// Waits until a line of the process's log contains `pattern`; returns the line.
fn wait_for_line(
    signals: &Signals,
    p: &mut Proc,
    pattern: &str,
    limit: Duration,
) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let exited = p.exited();
        if let Some(line) = p.log().lines().find(|l| l.contains(pattern)) {
            return Ok(line.to_owned());
        }
        if let Some(st) = exited {
            bail!("{} exited ({st}):\n{}", p.what, p.tail(20));
        }
        check_signals(signals)?;
        if Instant::now() >= deadline {
            bail!(
                "{} did not report `{pattern}` within {} s:\n{}",
                p.what,
                limit.as_secs(),
                p.tail(20)
            );
        }
        std::thread::sleep(POLL);
    }
}

struct Files {
    server_conf: PathBuf,
    client_ovpn: PathBuf,
}

/// The throwaway PKI and both configs.
fn write_configs(dir: &Path, pid: u32) -> Result<Files> {
    // The same PKI code as `warren pki init` / `warren user add` (easy-rsa's extensions).
    let mut rng = warren_io::OsRng::new()
        .context("the kernel random generator (getrandom) is unavailable")?;
    let now = std::time::SystemTime::now();
    let ca = warren_pki::Pki::generate(
        &warren_pki::CaOptions {
            common_name: "warren demo CA".to_owned(),
            ..Default::default()
        },
        now,
        &mut rng,
    )
    .context("generating the demo CA")?;
    let leaf = warren_pki::LeafOptions::default();
    let server = ca
        .issue_server("server", &leaf, now, &mut rng)
        .context("issuing the demo server certificate")?;
    let client = ca
        .issue_client("demo-client", &leaf, now, &mut rng)
        .context("issuing the demo client certificate")?;
    let ca_pem = ca.cert_pem().to_owned();
    let (server_crt, server_key) = (server.cert_pem, server.key_pem.as_str().to_owned());
    let (client_crt, client_key) = (client.cert_pem, client.key_pem.as_str().to_owned());
    let ta = warren_crypto::StaticKey::generate(&mut rng).to_pem();

    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    };
    write("ca.crt", &ca_pem)?;
    write("server.crt", &server_crt)?;
    write("server.key", &server_key)?;
    write("ta.key", &ta)?;
    let server_conf = write(
        "server.conf",
        &format!(
            "# warren demo server (OpenVPN syntax)\nport {PORT}\nproto udp\ndev tunwd{pid}s\n\
             ca ca.crt\ncert server.crt\nkey server.key\ndh none\ntls-crypt ta.key\n\
             topology subnet\nserver 10.89.0.0 255.255.255.0\nkeepalive 10 60\n\
             explicit-exit-notify 1\nverb 3\n"
        ),
    )?;
    let client_ovpn = write(
        "client.ovpn",
        &format!(
            "# warren demo client profile (OpenVPN syntax)\nclient\ndev tunwd{pid}c\nproto udp\n\
             remote {SERVER_UNDERLAY} {PORT}\nnobind\nremote-cert-tls server\n\
             resolv-retry infinite\npersist-key\npersist-tun\nexplicit-exit-notify\nverb 3\n\
             <ca>\n{ca_pem}</ca>\n<cert>\n{client_crt}</cert>\n<key>\n{client_key}</key>\n<tls-crypt>\n{ta}</tls-crypt>\n"
        ),
    )?;
    Ok(Files {
        server_conf,
        client_ovpn,
    })
}

/// `ping` from the client namespace to the server's tunnel address.
fn ping(signals: &Signals, client_ns: &Netns) -> Result<String> {
    let out = client_ns
        .output(
            signals,
            &["ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", SERVER_TUN],
            Duration::from_secs(20),
        )
        .context("pinging through the tunnel")?;
    let received = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(',').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    // "rtt min/avg/max/mdev = 0.101/0.160/0.236/0.044 ms"
    let avg = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .map(|v| format!("{v} ms avg"))
        .unwrap_or_else(|| "no RTT".into());
    Ok(format!("{SERVER_TUN}: 5 sent, {received}, {avg}"))
}

/// iperf3 client -> server through the tunnel.
fn iperf(
    signals: &Signals,
    server_ns: &Netns,
    client_ns: &Netns,
    dir: &Path,
    secs: u32,
) -> Result<String> {
    let port = BLAST_PORT.to_string();
    let mut srv = server_ns.spawn(
        "iperf3 -s",
        &[
            "iperf3",
            "-s",
            "-1",
            "--forceflush",
            "-B",
            SERVER_TUN,
            "-p",
            &port,
        ],
        &dir.join("iperf-server.log"),
    )?;
    wait_for_line(
        signals,
        &mut srv,
        "Server listening",
        Duration::from_secs(10),
    )?;
    let out = client_ns
        .output(
            signals,
            &[
                "iperf3",
                "-c",
                SERVER_TUN,
                "-p",
                &port,
                "-t",
                &secs.to_string(),
                "-f",
                "m",
                "--connect-timeout",
                "5000",
            ],
            Duration::from_secs(u64::from(secs) + 30),
        )
        .context("iperf3 through the tunnel")?;
    let line = out
        .lines()
        .rfind(|l| l.contains("receiver"))
        .ok_or_else(|| anyhow!("no result from iperf3:\n{out}"))?;
    let toks: Vec<&str> = line.split_whitespace().collect();
    let rate = toks
        .iter()
        .position(|t| *t == "Mbits/sec")
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| toks.get(i));
    Ok(format!(
        "{} Mbit/s (iperf3, {secs} s, client -> server, 1 stream)",
        rate.copied().unwrap_or("?")
    ))
}

/// The built-in measurement: a TCP sink in the server namespace, a source in the client
/// namespace, both copies of this executable (`warren demo --internal-*`).
fn builtin_blast(
    signals: &Signals,
    exe: &str,
    server_ns: &Netns,
    client_ns: &Netns,
    dir: &Path,
    secs: u32,
) -> Result<String> {
    let listen = format!("{SERVER_TUN}:{BLAST_PORT}");
    let mut sink = server_ns.spawn(
        "TCP sink",
        &[exe, "demo", "--internal-sink", &listen],
        &dir.join("sink.log"),
    )?;
    wait_for_line(
        signals,
        &mut sink,
        "sink listening",
        Duration::from_secs(10),
    )?;
    let out = client_ns
        .output(
            signals,
            &[
                exe,
                "demo",
                "--internal-source",
                &listen,
                "--seconds",
                &secs.to_string(),
            ],
            Duration::from_secs(u64::from(secs) + 30),
        )
        .context("the built-in throughput test")?;
    let _ = sink.wait(signals, Duration::from_secs(10))?;
    let received = sink.log();
    let bytes: f64 = kv(&received, "bytes").unwrap_or(0.0);
    let elapsed: f64 = kv(&received, "secs").unwrap_or(0.0).max(0.001);
    if bytes == 0.0 {
        bail!("the built-in throughput test moved no data:\n{out}\n{received}");
    }
    Ok(format!(
        "{:.0} Mbit/s (built-in TCP stream, {:.0} MB in {elapsed:.1} s, client -> server; install iperf3 for a standard measurement)",
        bytes * 8.0 / elapsed / 1e6,
        bytes / 1e6
    ))
}

fn kv(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// `--internal-sink ADDR`: accept one connection, count bytes to EOF (bounded to 60 s).
pub fn internal_sink(addr: SocketAddr) -> Result<()> {
    let l = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    l.set_nonblocking(true)?;
    println!("sink listening on {addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = loop {
        match l.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => bail!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes: u64 = 0;
    let mut first = None;
    let mut last = Instant::now();
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
                bytes += n as u64;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => bail!("read after {bytes} bytes: {e}"),
        }
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    println!("bytes={bytes} secs={secs:.3}");
    Ok(())
}

/// `--internal-source ADDR --seconds N`: send zeros for N seconds (at most 200 MB more
/// than what N seconds at line rate need is never an issue: the stream is time-bounded).
pub fn internal_source(addr: SocketAddr, secs: u32) -> Result<()> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    conn.set_write_timeout(Some(Duration::from_millis(500)))?;
    let buf = vec![0u8; 128 * 1024];
    let start = Instant::now();
    let limit = Duration::from_secs(u64::from(secs.clamp(1, 30)));
    let mut sent: u64 = 0;
    while start.elapsed() < limit {
        match conn.write(&buf) {
            Ok(n) => sent += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => bail!("write after {sent} bytes: {e}"),
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
    println!("sent={sent}");
    Ok(())
}
