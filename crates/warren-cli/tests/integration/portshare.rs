//! Issue 11, `port-share HOST PORT` (`openvpn-ops.md` §5.2): one TCP port serves OpenVPN
//! and HTTPS. A warren `proto tcp-server` with `port-share 127.0.0.1 8443` and an HTTPS
//! server (python's http.server behind TLS, a throwaway self-signed certificate) on
//! 127.0.0.1:8443 in the server namespace: from the client namespace, `curl -k` gets the
//! web server's pages (a small one and a 3 MB file, byte for byte) through warren's port
//! while a stock `openvpn` client connected over TCP to the same port pings through the
//! tunnel.
//!
//! Needs root: network namespaces (see `common`).
#![allow(clippy::disallowed_methods)]

use crate::common;

use std::fs;
use std::time::Duration;

use common::conf::TlsWrap;
use common::lab::{Lab, SERVER_PORT, SERVER_TUN_ADDR, ServerKind};
use common::netns::{Netns, ping_ok};
use common::process::{Proc, poll_until, run_ok};

const WEB_PORT: u16 = 8443;

/// Starts an HTTPS server serving `root` on 127.0.0.1:WEB_PORT in `ns` (killed by its PID
/// when the guard drops); returns once the port is bound (at most 15 s).
fn start_https(lab: &Lab) -> Proc {
    let dir = lab.dir();
    let (cert, key) = (dir.join("web.crt"), dir.join("web.key"));
    run_ok(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-keyout",
        key.to_str().expect("UTF-8"),
        "-out",
        cert.to_str().expect("UTF-8"),
    ]);
    // The interpreter itself (not a shim script), so the PID is the server's.
    let python = run_ok(&["python3", "-c", "import sys; print(sys.executable)"])
        .trim()
        .to_string();
    let script = format!(
        "import functools, http.server, ssl\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={root:?})\n\
         s = http.server.ThreadingHTTPServer(('127.0.0.1', {WEB_PORT}), h)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain({cert:?}, {key:?})\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        root = dir.join("www").to_str().expect("UTF-8"),
        cert = cert.to_str().expect("UTF-8"),
        key = key.to_str().expect("UTF-8"),
    );
    let web = lab.server_ns.spawn(
        "https",
        &[python.as_str(), "-c", &script],
        &dir.join("https.log"),
    );
    let bound = poll_until(Duration::from_secs(15), || {
        lab.server_ns.tcp_port_bound(WEB_PORT).then_some(())
    });
    assert!(
        bound.is_some(),
        "https server did not start:\n{}",
        web.log()
    );
    web
}

/// `curl -k` from `ns` to `url`, the body into `out`; panics with curl's error.
fn curl(ns: &Netns, url: &str, out: &std::path::Path) {
    let r = ns.exec(
        &[
            "curl",
            "-k",
            "-sS",
            "--max-time",
            "20",
            "-o",
            out.to_str().expect("UTF-8"),
            url,
        ],
        Duration::from_secs(30),
    );
    assert!(r.success(), "curl {url} failed: {}{}", r.stdout, r.stderr);
}

#[test]
fn https_and_openvpn_share_one_tcp_port() {
    let mut lab = Lab::p256("portshare", ServerKind::Warren);
    let www = lab.dir().join("www");
    fs::create_dir_all(&www).expect("www");
    let page = format!(
        "<html>warren port-share test page {}</html>\n",
        std::process::id()
    );
    fs::write(www.join("index.html"), &page).expect("index.html");
    // More than the relay's buffers many times over, so back-pressure is exercised.
    let big: Vec<u8> = (0..3u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(www.join("big.bin"), &big).expect("big.bin");
    let _web = start_https(&lab);

    let mut sc = lab.server_conf();
    sc.extra.push("proto tcp-server".into());
    sc.extra.push(format!("port-share 127.0.0.1 {WEB_PORT}"));
    lab.start_server(&sc);

    let mut cc = lab.client_conf(&lab.pki.clients[0].clone());
    cc.wrap = TlsWrap::Crypt;
    cc.extra.push("proto tcp-client".into());
    let client = lab.connect_client("client1", cc);
    assert!(
        client.log().contains("TCP connection established"),
        "the stock client did not use TCP:\n{}",
        common::process::tail(&client.log(), 30)
    );
    ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server");

    // HTTPS to the OpenVPN port, from the client's namespace (over the underlay).
    let base = format!("https://{}:{SERVER_PORT}", client.server_underlay);
    for i in 0..3 {
        let got = lab.dir().join(format!("index-{i}.html"));
        curl(&client.ns, &format!("{base}/"), &got);
        assert_eq!(fs::read_to_string(&got).expect("page"), page);
    }
    let got = lab.dir().join("big-got.bin");
    curl(&client.ns, &format!("{base}/big.bin"), &got);
    let got = fs::read(&got).expect("big");
    assert!(
        got == big,
        "big.bin differs ({} of {} bytes)",
        got.len(),
        big.len()
    );

    // The tunnel on the same port still works, both ways.
    ping_ok(&client.ns, SERVER_TUN_ADDR, "client -> server, after HTTPS");
    ping_ok(
        &lab.server_ns,
        client.addr(),
        "server -> client, after HTTPS",
    );
    let log = lab.server_log();
    assert!(
        log.contains("Non-OpenVPN client protocol detected"),
        "{}",
        common::process::tail(&log, 30)
    );
    // Every relayed connection is gone (both ends closed) once curl is done.
    let relayed = poll_until(Duration::from_secs(5), || {
        let out = lab
            .server_ns
            .exec_ok(&["ss", "-H", "-t", "-n", "state", "established"]);
        (!out.contains(&format!(":{WEB_PORT} "))).then_some(())
    });
    assert!(relayed.is_some(), "relayed connections left open");
    lab.assert_server_running();
}
