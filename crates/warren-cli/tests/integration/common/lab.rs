//! A lab: one server namespace running `openvpn` or `warren server` with a shared
//! `server.conf`, and stock `openvpn` clients, each in its own namespace.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::conf::{ClientConf, ServerConf, TlsWrap};
use super::helper::{HELPER_TEST, MODE_VAR, SINK_READY};
use super::netns::{Netns, link, ping_ok, unique_name};
use super::pki::{CertKey, KeyFormat, KeyType, Pki};
use super::process::{Proc, poll_until, tail};

/// Which server implementation a test runs against. The `Openvpn` kind validates the test
/// itself against the stock server; the `Warren` kind is the system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Openvpn,
    Warren,
}

impl ServerKind {
    pub fn label(self) -> &'static str {
        match self {
            ServerKind::Openvpn => "openvpn",
            ServerKind::Warren => "warren",
        }
    }
}

/// The warren binary built by cargo for this package's integration tests.
pub const WARREN_BIN: &str = env!("CARGO_BIN_EXE_warren");

pub const SERVER_PORT: u16 = 1194;
/// The server's address inside the tunnel (`server 10.8.0.0 255.255.255.0`).
pub const SERVER_TUN_ADDR: &str = "10.8.0.1";
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The line the stock client prints when the tunnel is up.
pub const CONNECTED: &str = "Initialization Sequence Completed";
pub const MB: u64 = 1024 * 1024;

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A per-test directory for the PKI, configs, logs and results. Removed when the test
/// passes; kept (and the tails of its logs printed) when it panics.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(test: &str) -> TestDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join("warren-it")
            .join(format!("{test}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- test files kept in {}", self.path.display());
            let mut entries: Vec<PathBuf> = fs::read_dir(&self.path)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            for p in entries {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                let Some(name) = name else { continue };
                if name.ends_with(".log") || name == "server.conf" {
                    let text = fs::read(&p)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    eprintln!("---- {name} (last 40 lines)\n{}", tail(&text, 40));
                }
            }
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A byte-count or timed TCP transfer through the tunnel.
#[derive(Clone, Debug)]
pub struct Transfer {
    pub bytes: Option<u64>,
    pub duration: Option<Duration>,
    /// Pace the sender to this many bytes per second.
    pub rate_bps: Option<u64>,
    /// Hard limit for the whole transfer.
    pub timeout: Duration,
}

impl Transfer {
    pub fn bytes(n: u64) -> Transfer {
        Transfer {
            bytes: Some(n),
            duration: None,
            rate_bps: None,
            timeout: Duration::from_secs(60),
        }
    }

    pub fn timed(duration: Duration, rate_bps: u64) -> Transfer {
        Transfer {
            bytes: None,
            duration: Some(duration),
            rate_bps: Some(rate_bps),
            timeout: duration + Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TransferReport {
    pub sent_bytes: u64,
    pub sent_sha256: String,
    pub recv_bytes: u64,
    pub recv_sha256: String,
    /// Longest pause between two reads at the receiver.
    pub max_gap: Duration,
    pub recv_complete: bool,
    pub elapsed: Duration,
}

impl TransferReport {
    /// Every byte arrived, unchanged, and the stream saw EOF.
    pub fn assert_intact(&self) {
        assert!(self.sent_bytes > 0, "nothing was sent: {self:?}");
        assert!(self.recv_complete, "receiver did not see EOF: {self:?}");
        assert_eq!(
            self.recv_bytes, self.sent_bytes,
            "byte count differs: {self:?}"
        );
        assert_eq!(
            self.recv_sha256, self.sent_sha256,
            "SHA-256 differs: {self:?}"
        );
    }

    pub fn mbit_per_s(&self) -> f64 {
        let s = self.elapsed.as_secs_f64().max(0.001);
        self.recv_bytes as f64 * 8.0 / s / 1e6
    }
}

#[derive(Clone, Debug)]
pub struct ProbeReport {
    pub replies: u64,
    pub first_reply_hex: String,
}

/// Starts the traffic helper (a copy of this test binary, see `helper`) in `mode` in
/// namespace `ns`, working in `dir` (log `<name>.log`); returns it and the path of its
/// result file. `args` become `WARREN_IT_<key>` variables.
pub fn spawn_helper(
    dir: &Path,
    ns: &Netns,
    name: &str,
    mode: &str,
    args: &[(&str, String)],
) -> (Proc, PathBuf) {
    let result = dir.join(format!("{name}.result"));
    let log = dir.join(format!("{name}.log"));
    let owned: Vec<(String, String)> = args
        .iter()
        .map(|(k, v)| (format!("WARREN_IT_{k}"), v.clone()))
        .chain([(
            "WARREN_IT_RESULT".to_string(),
            result.to_str().expect("UTF-8").to_string(),
        )])
        .collect();
    let mut env: Vec<(&str, String)> = vec![(MODE_VAR, mode.to_string())];
    env.extend(owned.iter().map(|(k, v)| (k.as_str(), v.clone())));
    // /proc/PID/exe rather than the path: it still executes this very binary when a
    // concurrent `cargo build` has replaced or deleted the file meanwhile.
    let argv = [
        format!("/proc/{}/exe", std::process::id()),
        "--exact".into(),
        HELPER_TEST.into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ];
    let proc = ns.spawn_env(name, &argv, &env, dir, &log);
    (proc, result)
}

/// The `key=value` lines of a helper's result file.
pub fn read_kv(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn kv_u64(m: &BTreeMap<String, String>, k: &str) -> u64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `nobody`'s group on this system.
pub fn nobody_group() -> &'static str {
    if fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("nogroup:"))
    {
        "nogroup"
    } else {
        "nobody"
    }
}

/// A stock `openvpn` client in its own namespace. The process is killed before the
/// namespace is deleted (field order).
#[derive(Debug)]
pub struct Client {
    pub proc: Proc,
    pub ns: Netns,
    pub name: String,
    pub dev: String,
    /// The server's underlay address as seen from this client.
    pub server_underlay: String,
    pub client_underlay: String,
    /// The client's address inside the tunnel, once connected.
    pub tun_addr: Option<String>,
}

impl Client {
    /// Waits for `Initialization Sequence Completed` and the tun address.
    pub fn wait_connected(&mut self, timeout: Duration) -> Result<String, String> {
        let line = self.proc.wait_for_line(CONNECTED, timeout)?;
        if line.contains("With Errors") {
            return Err(format!("{}: {line}\n{}", self.name, self.proc.log_tail(30)));
        }
        let addr = poll_until(Duration::from_secs(5), || self.ns.ipv4_addr(&self.dev))
            .ok_or_else(|| format!("{}: no IPv4 address on {}", self.name, self.dev))?;
        self.tun_addr = Some(addr.clone());
        Ok(addr)
    }

    pub fn addr(&self) -> &str {
        self.tun_addr.as_deref().expect("client is connected")
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Number of log lines containing `pat`.
    pub fn count(&self, pat: &str) -> usize {
        self.log().lines().filter(|l| l.contains(pat)).count()
    }
}

/// The `PUSH_REPLY` a stock client logged (verb 4 shows the whole message), from
/// `PUSH_REPLY` on; panics if there is none.
pub fn push_reply(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("PUSH_REPLY"))
        .unwrap_or_else(|| panic!("no PUSH_REPLY in the client log:\n{log}"));
    let start = line.find("PUSH_REPLY").expect("found");
    line[start..].trim_end_matches('\'').to_owned()
}

/// The server side of a test. Field order is drop order: server process, namespace, files.
#[derive(Debug)]
pub struct Lab {
    server: Option<Proc>,
    pub server_ns: Netns,
    pub kind: ServerKind,
    pub pki: Pki,
    links: u32,
    seq: Cell<u32>,
    dir: TestDir,
}

impl Lab {
    /// RSA-2048 PKI with PKCS#8 keys.
    pub fn new(test: &str, kind: ServerKind) -> Lab {
        Lab::with_pki(test, kind, KeyType::Rsa2048, KeyFormat::Pkcs8)
    }

    /// P-256 PKI with PKCS#8 keys: made in a fraction of a second.
    pub fn p256(test: &str, kind: ServerKind) -> Lab {
        Lab::with_pki(test, kind, KeyType::P256, KeyFormat::Pkcs8)
    }

    pub fn with_pki(test: &str, kind: ServerKind, key_type: KeyType, format: KeyFormat) -> Lab {
        let dir = TestDir::new(&format!("{test}-{}", kind.label()));
        let pki = Pki::generate_with(&dir.path().join("pki"), key_type, format, 3);
        let server_ns = Netns::new();
        // Nothing is forwarded by the kernel unless a test says so: client-to-client
        // traffic must be relayed by the VPN server itself.
        server_ns.sysctl("net.ipv4.ip_forward", "0");
        Lab {
            server: None,
            server_ns,
            kind,
            pki,
            links: 0,
            seq: Cell::new(0),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn next_seq(&self) -> u32 {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        n
    }

    /// The default server config of the tests (see `conf::ServerConf`).
    pub fn server_conf(&self) -> ServerConf {
        ServerConf {
            port: SERVER_PORT,
            dev: unique_name("tun", 's'),
            ca: self.pki.ca.clone(),
            cert: self.pki.server.crt.clone(),
            key: self.pki.server.key.clone(),
            ta_key: self.pki.ta_key.clone(),
            wrap: TlsWrap::Crypt,
            network: ("10.8.0.0".into(), "255.255.255.0".into()),
            data_ciphers: None,
            tls_version_min: None,
            tls_version_max: None,
            reneg_sec: None,
            client_to_client: false,
            status: Some(self.dir().join("status.txt")),
            verb: 4,
            extra: Vec::new(),
        }
    }

    /// Writes `server.conf` and starts the server in the server namespace; returns once its
    /// UDP (or TCP) port is bound (at most 15 s).
    pub fn start_server(&mut self, conf: &ServerConf) {
        let path = self.dir().join("server.conf");
        conf.write(&path);
        self.start_server_file(&path, conf.port);
    }

    /// Starts the server with the config file at `path`; returns once UDP `port` is bound.
    pub fn start_server_file(&mut self, path: &Path, port: u16) {
        assert!(self.server.is_none(), "server already started");
        self.server = Some(self.spawn_server_file(path, port, "server", &[]));
    }

    /// Starts a server with the config file at `path` (relative paths in it resolve against
    /// the test directory, its working directory), logging to `{tag}.log`, with `env`
    /// added; returns it once its UDP (or TCP) `port` is bound (at most 20 s).
    pub fn spawn_server_file(
        &self,
        path: &Path,
        port: u16,
        tag: &str,
        env: &[(&str, String)],
    ) -> Proc {
        let conf_s = path.to_str().expect("UTF-8 path").to_string();
        let argv: Vec<&str> = match self.kind {
            ServerKind::Openvpn => vec!["openvpn", "--config", &conf_s],
            ServerKind::Warren => vec![WARREN_BIN, "server", "--config", &conf_s],
        };
        let log = self.dir().join(format!("{tag}.log"));
        let mut proc = self
            .server_ns
            .spawn_env(self.kind.label(), &argv, env, self.dir(), &log);
        let ns = &self.server_ns;
        let bound = poll_until(Duration::from_secs(20), || {
            // A `proto tcp-server` config binds TCP only.
            if proc.exited().is_some() || ns.udp_port_bound(port) || ns.tcp_port_bound(port) {
                Some(())
            } else {
                None
            }
        });
        if let Some(st) = proc.exited() {
            panic!(
                "{} server exited at startup ({st}); log:\n{}",
                self.kind.label(),
                proc.log_tail(40)
            );
        }
        if bound.is_none() {
            panic!(
                "{} server did not bind UDP port {} within 20 s; log:\n{}",
                self.kind.label(),
                port,
                proc.log_tail(40)
            );
        }
        proc
    }

    pub fn server(&mut self) -> &mut Proc {
        self.server.as_mut().expect("server started")
    }

    pub fn server_log(&self) -> String {
        self.server.as_ref().map(|p| p.log()).unwrap_or_default()
    }

    /// The established TCP connections to the server port, as `ss` in the server namespace
    /// lists them.
    pub fn tcp_connections(&self) -> String {
        self.server_ns
            .exec_ok(&["ss", "-H", "-t", "-n", "state", "established"])
            .lines()
            .filter(|l| l.contains(&format!(":{SERVER_PORT} ")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Panics unless the server process is still running.
    pub fn assert_server_running(&mut self) {
        let kind = self.kind.label();
        let server = self.server();
        if let Some(st) = server.exited() {
            panic!("{kind} server exited ({st}); log:\n{}", server.log_tail(40));
        }
    }

    /// Pings both ways between the server and a client in `ns` with tunnel address `addr`,
    /// then moves `up` bytes to the server and `down` bytes back (0: none), SHA-256-checked.
    pub fn check_tunnel(&self, ns: &Netns, addr: &str, up: u64, down: u64) {
        ping_ok(ns, SERVER_TUN_ADDR, "client -> server");
        ping_ok(&self.server_ns, addr, "server -> client");
        if up > 0 {
            let spec = Transfer::bytes(up);
            self.transfer(ns, &self.server_ns, SERVER_TUN_ADDR, &spec)
                .assert_intact();
        }
        if down > 0 {
            let spec = Transfer::bytes(down);
            self.transfer(&self.server_ns, ns, addr, &spec)
                .assert_intact();
        }
    }

    /// The default client config for `cert`, matching the default server config. The
    /// remote is filled in by [`Lab::start_client`].
    pub fn client_conf(&self, cert: &CertKey) -> ClientConf {
        ClientConf {
            dev: unique_name("tun", 'c'),
            remote: (String::new(), SERVER_PORT),
            ca: self.pki.ca.clone(),
            cert: cert.crt.clone(),
            key: cert.key.clone(),
            ta_key: self.pki.ta_key.clone(),
            wrap: TlsWrap::Crypt,
            data_ciphers: None,
            tls_version_max: None,
            reneg_sec: None,
            verb: 4,
            extra: Vec::new(),
        }
    }

    /// A new namespace linked to the server namespace by its own veth pair on
    /// 198.18.k.0/24 (server .1, client .2). Returns (ns, server address, client address).
    pub fn new_peer_ns(&mut self) -> (Netns, String, String) {
        self.links += 1;
        assert!(self.links < 255, "too many links");
        let k = self.links;
        let ns = Netns::new();
        let srv = format!("198.18.{k}.1");
        let cli = format!("198.18.{k}.2");
        link(
            &self.server_ns,
            &ns,
            &format!("{srv}/24"),
            &format!("{cli}/24"),
        );
        (ns, srv, cli)
    }

    /// Starts a stock `openvpn` client with `conf` in a new namespace (does not wait).
    pub fn start_client(&mut self, name: &str, conf: ClientConf) -> Client {
        self.start_client_via(name, conf, None)
    }

    /// Like [`Lab::start_client`], but with `Some(port)` the client connects to that port
    /// on the server namespace's address rather than to the server's own port: to a relay
    /// (`relay::Relay`) listening there.
    pub fn start_client_via(
        &mut self,
        name: &str,
        mut conf: ClientConf,
        port: Option<u16>,
    ) -> Client {
        let (ns, srv, cli) = self.new_peer_ns();
        conf.remote.0 = srv.clone();
        if let Some(port) = port {
            conf.remote.1 = port;
        }
        let path = self.dir().join(format!("{name}.conf"));
        conf.write(&path);
        let log = self.dir().join(format!("{name}.log"));
        let conf_s = path.to_str().expect("UTF-8 path").to_string();
        let dir = self.dir().to_path_buf();
        let proc = ns.spawn_env(name, &["openvpn", "--config", &conf_s], &[], &dir, &log);
        Client {
            proc,
            ns,
            name: name.to_string(),
            dev: conf.dev.clone(),
            server_underlay: srv,
            client_underlay: cli,
            tun_addr: None,
        }
    }

    /// Starts a client and waits until it is connected (panics after 20 s, with logs).
    pub fn connect_client(&mut self, name: &str, conf: ClientConf) -> Client {
        let mut c = self.start_client(name, conf);
        if let Err(e) = c.wait_connected(CONNECT_TIMEOUT) {
            let server = self
                .server
                .as_ref()
                .map(|p| p.log_tail(40))
                .unwrap_or_default();
            panic!(
                "client {name} did not connect to the {} server: {e}\nserver log tail:\n{server}",
                self.kind.label()
            );
        }
        c
    }

    /// Starts the traffic helper in `mode` in namespace `ns` (log `<name>.log`); returns
    /// it and the path of its result file.
    pub fn helper(
        &self,
        ns: &Netns,
        name: &str,
        mode: &str,
        args: &[(&str, String)],
    ) -> (Proc, PathBuf) {
        spawn_helper(self.dir(), ns, name, mode, args)
    }

    /// Sends `spec` over TCP from namespace `from` to `to_addr` (listening in namespace
    /// `to`), both ends run by the traffic helper. Panics if a helper fails.
    pub fn transfer(
        &self,
        from: &Netns,
        to: &Netns,
        to_addr: &str,
        spec: &Transfer,
    ) -> TransferReport {
        let n = self.next_seq();
        let port = 5000 + n;
        let deadline_ms = spec.timeout.as_millis().to_string();
        let (mut sink, sink_result) = self.helper(
            to,
            &format!("sink{n}"),
            "sink",
            &[
                ("LISTEN", format!("0.0.0.0:{port}")),
                ("DEADLINE_MS", deadline_ms.clone()),
            ],
        );
        if let Err(e) = sink.wait_for_line(SINK_READY, Duration::from_secs(15)) {
            panic!("transfer sink did not start: {e}");
        }
        let mut args = vec![
            ("CONNECT", format!("{to_addr}:{port}")),
            ("DEADLINE_MS", deadline_ms),
            ("SEED", (0x5EED_0000 + u64::from(n)).to_string()),
        ];
        if let Some(b) = spec.bytes {
            args.push(("BYTES", b.to_string()));
        }
        if let Some(d) = spec.duration {
            args.push(("DURATION_MS", d.as_millis().to_string()));
        }
        if let Some(r) = spec.rate_bps {
            args.push(("RATE_BPS", r.to_string()));
        }
        let (mut source, source_result) = self.helper(from, &format!("source{n}"), "source", &args);
        let limit = spec.timeout + Duration::from_secs(10);
        let src_st = source.wait_exit(limit);
        let sink_st = sink.wait_exit(Duration::from_secs(15));
        if !src_st.is_some_and(|s| s.success()) {
            panic!(
                "transfer source failed ({src_st:?}):\n{}\nsink log:\n{}",
                source.log_tail(20),
                sink.log_tail(20)
            );
        }
        if !sink_st.is_some_and(|s| s.success()) {
            panic!("transfer sink failed ({sink_st:?}):\n{}", sink.log_tail(20));
        }
        let s = read_kv(&source_result).unwrap_or_else(|e| panic!("{e}"));
        let r = read_kv(&sink_result).unwrap_or_else(|e| panic!("{e}"));
        TransferReport {
            sent_bytes: kv_u64(&s, "bytes"),
            sent_sha256: s.get("sha256").cloned().unwrap_or_default(),
            recv_bytes: kv_u64(&r, "bytes"),
            recv_sha256: r.get("sha256").cloned().unwrap_or_default(),
            max_gap: Duration::from_millis(kv_u64(&r, "max_gap_ms")),
            recv_complete: r.get("complete").is_some_and(|v| v == "true"),
            elapsed: Duration::from_millis(kv_u64(&r, "elapsed_ms")),
        }
    }

    /// Sends `payload` to `dst:port` from namespace `ns` `sends` times over `wait` and
    /// counts the datagrams that come back.
    pub fn udp_probe(
        &self,
        ns: &Netns,
        dst: &str,
        port: u16,
        payload: &[u8],
        sends: u32,
        wait: Duration,
    ) -> ProbeReport {
        let n = self.next_seq();
        let (mut p, result) = self.helper(
            ns,
            &format!("probe{n}"),
            "udp-probe",
            &[
                ("CONNECT", format!("{dst}:{port}")),
                ("PAYLOAD_HEX", hex::encode(payload)),
                ("SENDS", sends.to_string()),
                ("WAIT_MS", wait.as_millis().to_string()),
            ],
        );
        let st = p.wait_exit(wait + Duration::from_secs(15));
        if !st.is_some_and(|s| s.success()) {
            panic!("udp probe failed ({st:?}):\n{}", p.log_tail(20));
        }
        let r = read_kv(&result).unwrap_or_else(|e| panic!("{e}"));
        ProbeReport {
            replies: kv_u64(&r, "replies"),
            first_reply_hex: r.get("first_reply_hex").cloned().unwrap_or_default(),
        }
    }

    /// iperf3 from namespace `client` to an `iperf3 -s -1` bound to `server_addr` in
    /// namespace `server`; returns the receiver's Mbit/s.
    pub fn iperf(
        &self,
        client: &Netns,
        server: &Netns,
        server_addr: &str,
        secs: u32,
        streams: u32,
    ) -> Result<f64, String> {
        let n = self.next_seq();
        let port_n = 5200 + (n % 1000) as u16;
        let port = port_n.to_string();
        let log = self.dir().join(format!("iperf-server{n}.log"));
        let mut srv = server.spawn(
            "iperf3 -s",
            &[
                "iperf3",
                "-s",
                "-1",
                "--forceflush",
                "-B",
                server_addr,
                "-p",
                &port,
            ],
            &log,
        );
        poll_until(Duration::from_secs(10), || {
            (srv.exited().is_some() || server.tcp_port_bound(port_n)).then_some(())
        });
        if srv.exited().is_some() || !server.tcp_port_bound(port_n) {
            return Err(format!("iperf3 -s did not start:\n{}", srv.log_tail(20)));
        }
        let out = client.exec(
            &[
                "iperf3",
                "-c",
                server_addr,
                "-p",
                &port,
                "-t",
                &secs.to_string(),
                "-P",
                &streams.to_string(),
                "-f",
                "m",
                "--connect-timeout",
                "5000",
            ],
            Duration::from_secs(u64::from(secs) + 30),
        );
        fs::write(self.dir().join(format!("iperf-client{n}.log")), &out.stdout).ok();
        if !out.success() {
            return Err(format!(
                "iperf3 client failed: {}\n{}",
                out.stdout, out.stderr
            ));
        }
        // "[SUM]   0.00-3.00   sec   120 MBytes   335 Mbits/sec   receiver" (or "[  5]" for
        // one stream): the last receiver line is the total.
        let line = out
            .stdout
            .lines()
            .rfind(|l| l.contains("receiver"))
            .ok_or_else(|| format!("no receiver line in iperf3 output:\n{}", out.stdout))?;
        let toks: Vec<&str> = line.split_whitespace().collect();
        let i = toks
            .iter()
            .position(|t| *t == "Mbits/sec")
            .filter(|&i| i > 0)
            .ok_or_else(|| format!("cannot parse {line}"))?;
        toks[i - 1]
            .parse::<f64>()
            .map_err(|e| format!("cannot parse {line}: {e}"))
    }
}
