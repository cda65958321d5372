//! Issue 11: the client reaches its server through an HTTP CONNECT proxy (`http-proxy`)
//! or a SOCKS5 proxy (`socks-proxy`).
//!
//! The proxies are real Debian ones, `tinyproxy` (HTTP CONNECT, optionally with Basic
//! authentication) and `microsocks` (SOCKS5, optionally with RFC 1929 username/password),
//! each run in the foreground in a proxy namespace between the client and the server:
//!
//! ```text
//!   client ns ──198.19.k.0/24── proxy ns (198.19.255.1 on lo; no forwarding) ──198.18.1.0/24── server ns
//! ```
//!
//! The client's only route is a default route to the proxy namespace, which forwards
//! nothing: the server is reachable through the proxy only, and the proxy is reached
//! through a gateway (so the route the client keeps outside the tunnel for it matters).
//!
//! * `warren client` through each proxy, with and without credentials, to a warren server
//!   and to the stock `openvpn` server (both `proto tcp-server`): tunnel up, ping, the
//!   server sees the proxy's connection; with `redirect-gateway def1` the host route kept
//!   outside the tunnel is the proxy's;
//! * the stock `openvpn` client through the same proxies to a warren server;
//! * proxies that refuse (wrong password: 407 and SOCKS status 1, CONNECT to a port the
//!   proxy does not allow: 403) or never answer make `warren client` move to the next
//!   `<connection>` entry.
//!
//! Needs root (namespaces) and the `tinyproxy` and `microsocks` commands (see `.ci/run`).
#![allow(clippy::disallowed_methods)]

use crate::client_common;
use crate::common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use client_common::{NsEtc, Prepared, WarrenClient, spawn_client};
use common::conf::ClientConf;
use common::lab::{Client, Lab, SERVER_PORT, SERVER_TUN_ADDR, ServerKind};
use common::netns::{Netns, link, ping_ok};
use common::process::{Proc, poll_until, run_bounded};

/// The proxies' address: on the proxy namespace's loopback, reached through a gateway.
const PROXY_IP: &str = "198.19.255.1";
const HTTP_PORT: u16 = 8888;
const SOCKS_PORT: u16 = 1080;
/// A port no server listens on, and tinyproxy does not allow CONNECT to.
const FORBIDDEN_PORT: u16 = 1195;

fn lab(test: &str, kind: ServerKind) -> Lab {
    let mut lab = Lab::p256(test, kind);
    let mut sc = lab.server_conf();
    sc.extra.push("proto tcp-server".into());
    lab.start_server(&sc);
    lab
}

/// Fails loudly when a proxy program is missing: CI installs it (`.ci/run`).
fn require(cmd: &str, package: &str) {
    let out = run_bounded(
        Command::new("sh").args(["-c", &format!("command -v {cmd}")]),
        Duration::from_secs(5),
    );
    assert!(
        out.success(),
        "`{cmd}` is not installed: `apt-get install {package}` (the CI script installs it)"
    );
}

/// How many of `conns` come from `addr` (`ss` shows v4-mapped peers as `[::ffff:a.b.c.d]`).
fn from_addr(conns: &str, addr: &str) -> usize {
    conns
        .lines()
        .filter(|l| l.contains(&format!(" {addr}:")) || l.contains(&format!(":{addr}]:")))
        .count()
}

/// The proxy namespace, its proxies and the client namespaces behind it. Field order is
/// drop order: the proxies go before their namespace.
struct ProxyNet {
    proxies: Vec<Proc>,
    ns: Netns,
    /// The server's address, as the proxies reach it.
    srv: String,
    /// The proxy namespace's address on the server link: the server sees connections
    /// from it.
    on_server_link: String,
    links: u32,
    dir: PathBuf,
}

impl ProxyNet {
    fn new(lab: &mut Lab) -> ProxyNet {
        require("tinyproxy", "tinyproxy");
        require("microsocks", "microsocks");
        let (ns, srv, on_server_link) = lab.new_peer_ns();
        ns.sysctl("net.ipv4.ip_forward", "0");
        ns.exec_ok(&["ip", "addr", "add", &format!("{PROXY_IP}/32"), "dev", "lo"]);
        ProxyNet {
            proxies: Vec::new(),
            ns,
            srv,
            on_server_link,
            links: 0,
            dir: lab.dir().to_path_buf(),
        }
    }

    fn wait_listening(&mut self, port: u16) {
        let i = self.proxies.len() - 1;
        let ns = &self.ns;
        let proc = &mut self.proxies[i];
        let up = poll_until(Duration::from_secs(10), || {
            (proc.exited().is_some() || ns.tcp_port_bound(port)).then_some(())
        });
        assert!(
            up.is_some() && proc.is_running(),
            "{} did not listen on {port}:\n{}",
            proc.name(),
            proc.log_tail(20)
        );
    }

    /// `tinyproxy` in the foreground on `port`, allowing CONNECT to the server port only;
    /// with `basic`, Basic authentication with that user and password. Returns its index.
    fn tinyproxy(&mut self, port: u16, basic: Option<(&str, &str)>) -> usize {
        let name = format!("tinyproxy-{port}");
        let mut conf = format!(
            "Port {port}\nListen {PROXY_IP}\nTimeout 30\nMaxClients 16\nAllow 198.19.0.0/16\n\
             ConnectPort {SERVER_PORT}\nLogLevel Info\nPidFile \"{}\"\n",
            self.dir.join(format!("{name}.pid")).display()
        );
        if let Some((u, p)) = basic {
            conf.push_str(&format!("BasicAuth {u} {p}\n"));
        }
        let path = self.dir.join(format!("{name}.conf"));
        fs::write(&path, conf).expect("write tinyproxy.conf");
        let log = self.dir.join(format!("{name}.log"));
        let p = self.ns.spawn(
            &name,
            &["tinyproxy", "-d", "-c", path.to_str().expect("UTF-8")],
            &log,
        );
        self.proxies.push(p);
        self.wait_listening(port);
        self.proxies.len() - 1
    }

    /// `microsocks` on `port`; with `auth`, RFC 1929 username/password.
    fn microsocks(&mut self, port: u16, auth: Option<(&str, &str)>) -> usize {
        let name = format!("microsocks-{port}");
        let port_s = port.to_string();
        let mut argv = vec!["microsocks", "-i", PROXY_IP, "-p", &port_s];
        if let Some((u, p)) = auth {
            argv.extend(["-u", u, "-P", p]);
        }
        let log = self.dir.join(format!("{name}.log"));
        let p = self.ns.spawn(&name, &argv, &log);
        self.proxies.push(p);
        self.wait_listening(port);
        self.proxies.len() - 1
    }

    /// A client namespace behind the proxy namespace: its one route is a default route
    /// through it. Returns the namespace and its address.
    fn client_ns(&mut self) -> (Netns, String) {
        self.links += 1;
        let k = self.links;
        let ns = Netns::new();
        let gw = format!("198.19.{k}.1");
        let cli = format!("198.19.{k}.2");
        link(&self.ns, &ns, &format!("{gw}/24"), &format!("{cli}/24"));
        ns.exec_ok(&["ip", "route", "add", "default", "via", &gw]);
        (ns, cli)
    }

    /// The gateway a client namespace from [`ProxyNet::client_ns`] uses.
    fn gateway(&self) -> String {
        format!("198.19.{}.1", self.links)
    }

    /// A credentials file (username and password lines).
    fn auth_file(&self, name: &str, user: &str, pass: &str) -> String {
        let p = self.dir.join(format!("{name}.auth"));
        fs::write(&p, format!("{user}\n{pass}\n")).expect("write auth file");
        p.to_str().expect("UTF-8").to_owned()
    }
}

/// Starts `warren client` with `conf` (whose remote is set to the server) in a new
/// namespace behind the proxies.
fn warren_client(lab: &Lab, net: &mut ProxyNet, name: &str, mut conf: ClientConf) -> WarrenClient {
    let (ns, cli) = net.client_ns();
    let etc = NsEtc::new(&ns);
    conf.remote = (net.srv.clone(), SERVER_PORT);
    let p = Prepared {
        ns,
        etc,
        conf,
        srv: net.srv.clone(),
        cli,
    };
    spawn_client(lab, name, p, &[])
}

/// `warren client` through `proxy_lines` to the lab's server: up through the proxy,
/// ping, the server sees the proxy's connection, clean exit.
fn warren_through(lab: &mut Lab, net: &mut ProxyNet, proxy_lines: &[String], via: &str) {
    let mut conf = lab.client_conf(&lab.pki.clients[0].clone());
    conf.extra.push("proto tcp-client".into());
    conf.extra.extend(proxy_lines.iter().cloned());
    let mut client = warren_client(lab, net, "client1", conf);
    let line = client.expect_up(lab, Duration::from_secs(20));
    let srv = &net.srv;
    assert!(
        line.contains(&format!(
            "via server {srv}:{SERVER_PORT} through {via} {PROXY_IP}:"
        )),
        "{line}"
    );
    let log = client.log();
    assert!(log.contains(": connected through to"), "{log}");
    lab.check_tunnel(&client.ns, client.addr(), 0, 0);
    let conns = lab.tcp_connections();
    assert!(
        from_addr(&conns, &net.on_server_link) == 1,
        "the server has no connection from the proxy ({}): {conns}",
        net.on_server_link
    );
    client.stop_cleanly();
    lab.assert_server_running();
}

#[test]
fn warren_client_http_proxy_with_basic_auth_to_warren_server() {
    let mut lab = lab("px-http-w", ServerKind::Warren);
    let mut net = ProxyNet::new(&mut lab);
    let i = net.tinyproxy(HTTP_PORT, Some(("alice", "s3cret")));
    let auth = net.auth_file("alice", "alice", "s3cret");
    warren_through(
        &mut lab,
        &mut net,
        &[
            format!("http-proxy {PROXY_IP} {HTTP_PORT} {auth} basic"),
            "http-proxy-option AGENT warren-test/1.0".into(),
        ],
        "HTTP proxy",
    );
    let plog = net.proxies[i].log();
    assert!(
        plog.contains(&format!("CONNECT {}:{SERVER_PORT} HTTP/1.0", net.srv)),
        "{plog}"
    );
}

#[test]
fn warren_client_http_proxy_to_stock_server() {
    let mut lab = lab("px-http-o", ServerKind::Openvpn);
    let mut net = ProxyNet::new(&mut lab);
    net.tinyproxy(HTTP_PORT, None);
    warren_through(
        &mut lab,
        &mut net,
        &[
            format!("http-proxy {PROXY_IP} {HTTP_PORT}"),
            "http-proxy-option VERSION 1.1".into(),
        ],
        "HTTP proxy",
    );
}

#[test]
fn warren_client_socks_proxy_with_auth_to_warren_server() {
    let mut lab = lab("px-socks-w", ServerKind::Warren);
    let mut net = ProxyNet::new(&mut lab);
    net.microsocks(SOCKS_PORT, Some(("bob", "pw2")));
    let auth = net.auth_file("bob", "bob", "pw2");
    warren_through(
        &mut lab,
        &mut net,
        &[format!("socks-proxy {PROXY_IP} {SOCKS_PORT} {auth}")],
        "SOCKS proxy",
    );
}

#[test]
fn warren_client_socks_proxy_to_stock_server() {
    let mut lab = lab("px-socks-o", ServerKind::Openvpn);
    let mut net = ProxyNet::new(&mut lab);
    net.microsocks(SOCKS_PORT, None);
    // The default port (1080).
    warren_through(
        &mut lab,
        &mut net,
        &[format!("socks-proxy {PROXY_IP}")],
        "SOCKS proxy",
    );
}

/// With `redirect-gateway def1`, the host route the client keeps outside the tunnel is the
/// proxy's (the socket goes there), not the server's.
#[test]
fn redirect_gateway_keeps_the_proxy_outside_the_tunnel() {
    let mut lab = lab("px-redirect", ServerKind::Warren);
    let mut net = ProxyNet::new(&mut lab);
    net.tinyproxy(HTTP_PORT, None);
    let mut conf = lab.client_conf(&lab.pki.clients[0].clone());
    conf.extra.push("proto tcp-client".into());
    conf.extra
        .push(format!("http-proxy {PROXY_IP} {HTTP_PORT}"));
    conf.extra.push("redirect-gateway def1".into());
    let mut client = warren_client(&lab, &mut net, "client1", conf);
    let line = client.expect_up(&lab, Duration::from_secs(20));
    assert!(line.contains("0.0.0.0/1"), "{line}");
    let gw = net.gateway();
    let to_proxy = client.ns.exec_ok(&["ip", "-4", "route", "get", PROXY_IP]);
    assert!(
        to_proxy.contains(&format!("via {gw}")) && !to_proxy.contains(&client.dev),
        "the proxy is not routed outside the tunnel: {to_proxy}"
    );
    let to_server = client.ns.exec_ok(&["ip", "-4", "route", "get", &net.srv]);
    assert!(
        to_server.contains(&client.dev),
        "the VPN server's own address should go into the tunnel (only the proxy is kept out): {to_server}"
    );
    let routes = client.ns.exec_ok(&["ip", "-4", "route", "show"]);
    assert!(
        routes.contains(&format!("{PROXY_IP} via {gw}")),
        "no host route to the proxy: {routes}"
    );
    // The tunnel carries the traffic while the proxy connection stays outside it.
    ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server");
    assert!(
        client.stop(Duration::from_secs(5)),
        "{}",
        client.proc.log_tail(20)
    );
    let after = client.ns.exec_ok(&["ip", "-4", "route", "show"]);
    assert!(
        !after.contains(&format!("{PROXY_IP} via")) && !after.contains("0.0.0.0/1"),
        "routes left behind: {after}"
    );
}

/// The stock `openvpn` client through tinyproxy (Basic) and microsocks (username and
/// password) to a warren server.
#[test]
fn stock_client_through_both_proxies_to_warren_server() {
    let mut lab = lab("px-stock", ServerKind::Warren);
    let mut net = ProxyNet::new(&mut lab);
    net.tinyproxy(HTTP_PORT, Some(("carol", "c4rol")));
    net.microsocks(SOCKS_PORT, Some(("dave", "d4ve")));
    let http_auth = net.auth_file("carol", "carol", "c4rol");
    let socks_auth = net.auth_file("dave", "dave", "d4ve");
    let lines = [
        format!("http-proxy {PROXY_IP} {HTTP_PORT} {http_auth} basic"),
        format!("socks-proxy {PROXY_IP} {SOCKS_PORT} {socks_auth}"),
    ];
    let mut clients = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let name = format!("stock{i}");
        let mut conf = lab.client_conf(&lab.pki.clients[i].clone());
        conf.remote = (net.srv.clone(), SERVER_PORT);
        conf.extra.push("proto tcp-client".into());
        conf.extra.push(line.clone());
        let path = lab.dir().join(format!("{name}.conf"));
        conf.write(&path);
        let (ns, cli) = net.client_ns();
        let log = lab.dir().join(format!("{name}.log"));
        let proc = ns.spawn_env(
            &name,
            &["openvpn", "--config", path.to_str().expect("UTF-8")],
            &[],
            lab.dir(),
            &log,
        );
        let mut c = Client {
            proc,
            ns,
            name,
            dev: conf.dev.clone(),
            server_underlay: net.srv.clone(),
            client_underlay: cli,
            tun_addr: None,
        };
        if let Err(e) = c.wait_connected(Duration::from_secs(30)) {
            panic!("{e}\nserver log:\n{}", lab.server_log());
        }
        clients.push(c);
    }
    for c in &clients {
        ping_ok(&c.ns, SERVER_TUN_ADDR, &format!("{} -> server", c.name));
        ping_ok(&lab.server_ns, c.addr(), &format!("server -> {}", c.name));
    }
    let conns = lab.tcp_connections();
    assert_eq!(
        from_addr(&conns, &net.on_server_link),
        2,
        "both clients come from the proxy namespace: {conns}"
    );
    for c in &clients {
        let log = c.log();
        assert!(
            log.contains(&format!(
                "TCP connection established with [AF_INET]{PROXY_IP}:"
            )),
            "{}",
            common::process::tail(&log, 30)
        );
    }
    lab.assert_server_running();
}

/// Proxies that refuse or stay silent: each entry fails with its reason in the log, and the
/// client moves on to the next `<connection>`, the last of which works.
#[test]
fn refusing_proxies_move_to_the_next_connection() {
    let mut lab = lab("px-refuse", ServerKind::Warren);
    let mut net = ProxyNet::new(&mut lab);
    net.tinyproxy(HTTP_PORT, Some(("alice", "s3cret")));
    net.microsocks(SOCKS_PORT, Some(("bob", "pw2")));
    // A proxy that accepts connections and never answers: a tinyproxy stopped with
    // SIGSTOP (the kernel still completes the TCP handshake).
    let silent_port = 8889;
    let silent = net.tinyproxy(silent_port, None);
    let pid = net.proxies[silent].pid().to_string();
    let out = run_bounded(
        Command::new("kill").args(["-s", "STOP", &pid]),
        Duration::from_secs(5),
    );
    assert!(out.success(), "kill -STOP {pid}: {}", out.stderr);

    let wrong = net.auth_file("wrong", "alice", "not-the-password");
    let good = net.auth_file("alice", "alice", "s3cret");
    let socks_wrong = net.auth_file("bob-wrong", "bob", "nope");
    let srv = net.srv.clone();
    let block =
        |port: u16, lines: &str| format!("<connection>\nremote {srv} {port}\n{lines}</connection>");
    let mut conf = lab.client_conf(&lab.pki.clients[0].clone());
    conf.extra.push("proto tcp-client".into());
    conf.extra.push("connect-retry 0".into());
    conf.extra.push(block(
        SERVER_PORT,
        &format!("http-proxy {PROXY_IP} {HTTP_PORT} {wrong} basic\n"),
    ));
    conf.extra.push(block(
        FORBIDDEN_PORT,
        &format!("http-proxy {PROXY_IP} {HTTP_PORT} {good} basic\n"),
    ));
    conf.extra.push(block(
        SERVER_PORT,
        &format!("socks-proxy {PROXY_IP} {SOCKS_PORT} {socks_wrong}\n"),
    ));
    conf.extra.push(block(
        SERVER_PORT,
        &format!("http-proxy {PROXY_IP} {silent_port}\nserver-poll-timeout 3\n"),
    ));
    conf.extra.push(block(
        SERVER_PORT,
        &format!("http-proxy {PROXY_IP} {HTTP_PORT} {good} basic\n"),
    ));
    let mut client = warren_client(&lab, &mut net, "client1", conf);
    let line = client.expect_up(&lab, Duration::from_secs(40));
    assert!(
        line.contains(&format!(
            "via server {srv}:{SERVER_PORT} through HTTP proxy"
        )),
        "{line}"
    );
    let log = client.log();
    for want in [
        "it refused the credentials (`HTTP/1.0 401 Unauthorized`)",
        &format!("(CONNECT to {srv}:{FORBIDDEN_PORT}): it refused the CONNECT: `HTTP/1.0 403"),
        "it refused the username and password",
        &format!(
            "HTTP proxy {PROXY_IP}:{silent_port}: no complete answer to the CONNECT to {srv}:{SERVER_PORT} within 3 s"
        ),
    ] {
        assert!(log.contains(want), "missing `{want}` in:\n{log}");
    }
    // In order, each followed by the next entry.
    let next: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("next attempt in"))
        .collect();
    assert!(next.len() >= 4, "{log}");
    assert!(
        next[0].contains(&format!(":{FORBIDDEN_PORT} (HTTP proxy)")),
        "{}",
        next[0]
    );
    assert!(next[1].contains("(SOCKS proxy)"), "{}", next[1]);
    ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server");
    assert!(
        client.stop(Duration::from_secs(5)),
        "{}",
        client.proc.log_tail(20)
    );
}

/// A profile whose proxy credentials are inline (`<http-proxy-user-pass>`), as profiles
/// exported for users carry them.
#[test]
fn inline_http_proxy_credentials() {
    let mut lab = lab("px-inline", ServerKind::Warren);
    let mut net = ProxyNet::new(&mut lab);
    net.tinyproxy(HTTP_PORT, Some(("erin", "3r1n")));
    warren_through(
        &mut lab,
        &mut net,
        &[
            format!("http-proxy {PROXY_IP} {HTTP_PORT} \"\" basic"),
            "<http-proxy-user-pass>\nerin\n3r1n\n</http-proxy-user-pass>".into(),
        ],
        "HTTP proxy",
    );
}
