//! Issue 14: Prometheus metrics, scraped from inside the server's namespace and parsed with
//! the reference parsers (Debian's python3-prometheus-client: the Prometheus text format
//! 0.0.4 parser, and the strict OpenMetrics parser when the scrape asks for OpenMetrics).
//!
//! A zero-config `warren server --metrics 127.0.0.1:9586` gets: a stock `openvpn` client
//! that connects and sends a known amount of data through the tunnel; a stock client whose
//! user is disabled (authentication rejected); and a stock client presenting a certificate
//! of another CA (a handshake failure of kind `certificate`). The scrape must show one
//! connected session, link and tun byte counters above the traffic sent, the failure by
//! reason, both authentication results, and the handshake-duration histogram's count.
//!
//! Every process runs in the test's namespaces and every wait is bounded. Needs root,
//! `openvpn` and `python3-prometheus-client`.
#![allow(clippy::disallowed_methods)]

use crate::common;
use crate::state_common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::lab::{Lab, ServerKind, Transfer};
use common::process::{poll_until, tail};
use state_common::{SERVER_VPN_IP, Warren, ZeroServer, connect, expect_auth_failed, start_profile};

const METRICS_ADDR: &str = "127.0.0.1:9586";

/// Fetches `url` and parses it with the reference parser of `format` (`text` or
/// `openmetrics`); prints the content type, the families and the samples, one per line.
const SCRAPER: &str = r#"
import sys, urllib.request
url, fmt = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url)
if fmt == "openmetrics":
    req.add_header("Accept", "application/openmetrics-text; version=1.0.0; charset=utf-8")
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
with urllib.request.urlopen(req, timeout=5) as r:
    ctype = r.headers.get("Content-Type", "")
    body = r.read().decode("utf-8")
print("CONTENT-TYPE", ctype)
for f in text_string_to_metric_families(body):
    print("FAMILY", f.name, f.type, f.unit or "-")
    for s in f.samples:
        labels = ",".join(k + "=" + v for k, v in sorted(s.labels.items()))
        print("SAMPLE", f.name, s.name, labels or "-", repr(float(s.value)))
"#;

/// One parsed scrape.
#[derive(Debug, Default)]
struct Scrape {
    content_type: String,
    /// family → (type, unit)
    families: BTreeMap<String, (String, String)>,
    /// (sample name, labels, value)
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    raw: String,
}

impl Scrape {
    fn parse(out: &str) -> Scrape {
        let mut s = Scrape {
            raw: out.to_owned(),
            ..Scrape::default()
        };
        for line in out.lines() {
            let mut w = line.split(' ');
            match w.next() {
                Some("CONTENT-TYPE") => s.content_type = line["CONTENT-TYPE ".len()..].into(),
                Some("FAMILY") => {
                    let (Some(name), Some(ty), Some(unit)) = (w.next(), w.next(), w.next()) else {
                        panic!("bad line {line}");
                    };
                    s.families.insert(name.into(), (ty.into(), unit.into()));
                }
                Some("SAMPLE") => {
                    let (Some(_family), Some(name), Some(labels), Some(value)) =
                        (w.next(), w.next(), w.next(), w.next())
                    else {
                        panic!("bad line {line}");
                    };
                    let labels = labels
                        .split(',')
                        .filter(|l| *l != "-")
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    let value = value.parse().unwrap_or_else(|_| panic!("bad value {line}"));
                    s.samples.push((name.into(), labels, value));
                }
                _ => {}
            }
        }
        s
    }

    /// The sum of the samples named `name` whose labels include `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).is_some_and(|l| l == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }

    fn family_type(&self, name: &str) -> Option<&str> {
        self.families.get(name).map(|(t, _)| t.as_str())
    }
}

/// Scrapes the server's endpoint from inside its namespace.
fn scrape(lab: &Lab, script: &Path, format: &str) -> Result<Scrape, String> {
    let url = format!("http://{METRICS_ADDR}/metrics");
    let out = lab.server_ns.exec(
        &[
            "/usr/bin/python3",
            script.to_str().expect("UTF-8"),
            &url,
            format,
        ],
        Duration::from_secs(20),
    );
    if !out.success() {
        return Err(format!(
            "scrape ({format}) failed: {}\n{}",
            out.stdout, out.stderr
        ));
    }
    Ok(Scrape::parse(&out.stdout))
}

/// The exported profile with its inline `<cert>` and `<key>` replaced by files of another
/// CA (the profile still trusts the server's CA and has its tls-crypt key).
fn with_foreign_cert(profile: &str, cert: &Path, key: &Path) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in profile.lines() {
        match line.trim() {
            "<cert>" | "<key>" => skipping = true,
            "</cert>" | "</key>" => skipping = false,
            _ if skipping => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str(&format!("cert {}\nkey {}\n", cert.display(), key.display()));
    out
}

#[test]
fn metrics_scraped_and_parsed_by_the_reference_parsers() {
    // The lab's own PKI is the "other CA": the zero-config server has its own.
    let mut lab = Lab::p256("metrics", ServerKind::Warren);
    let python_ok = lab.server_ns.exec(
        &[
            "/usr/bin/python3",
            "-c",
            "import prometheus_client.parser, prometheus_client.openmetrics.parser",
        ],
        Duration::from_secs(20),
    );
    assert!(
        python_ok.success(),
        "python3-prometheus-client is needed (apt-get install python3-prometheus-client): {}",
        python_ok.stderr
    );
    let script = lab.dir().join("scrape.py");
    fs::write(&script, SCRAPER).expect("write scraper");
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let mut server = ZeroServer::start(&lab, &state, &["--metrics", METRICS_ADDR]);
    server.wait_for("Prometheus metrics on", Duration::from_secs(10));
    w.add_user("alice", &[]);
    w.add_user("bob", &[]);

    // Before any client: the families are there, with zeros.
    let first = poll_until(Duration::from_secs(10), || {
        scrape(&lab, &script, "text").ok()
    })
    .expect("the metrics endpoint answers");
    assert!(
        first.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        first.content_type
    );
    assert_eq!(
        first.sum("warren_sessions", &[("state", "connected")]),
        0.0,
        "{}",
        first.raw
    );

    // alice connects and sends 3 MB through the tunnel.
    let alice = connect(&mut lab, &server, &w, "alice", "alice", None, &[]);
    const SENT: u64 = 3_000_000;
    lab.transfer(
        &alice.ns,
        &lab.server_ns,
        SERVER_VPN_IP,
        &Transfer::bytes(SENT),
    )
    .assert_intact();

    // bob is disabled: the user database rejects him.
    let mut bob = start_profile(&mut lab, "bob", None, |srv| {
        let profile = w.export("bob", srv, &[]);
        w.ok(&["user", "disable", "bob"]);
        profile
    });
    expect_auth_failed(&mut bob.proc, Duration::from_secs(30));

    // mallory presents a certificate of another CA: the TLS handshake fails.
    let foreign = lab.pki.clients[0].clone();
    let mut mallory = start_profile(&mut lab, "mallory", None, |srv| {
        with_foreign_cert(&w.export("alice", srv, &[]), &foreign.crt, &foreign.key)
    });
    server.wait_for("handshake failed", Duration::from_secs(30));
    mallory.proc.kill();

    // The counters are published once a second: scrape until they show all of it.
    let want = |s: &Scrape| {
        s.sum("warren_sessions", &[("state", "connected")]) == 1.0
            && s.sum(
                "warren_handshake_failures_total",
                &[("reason", "certificate")],
            ) >= 1.0
            && s.sum("warren_tun_bytes_total", &[("direction", "tx")]) >= SENT as f64
            && s.sum("warren_auth_total", &[("result", "rejected")]) >= 1.0
    };
    let text = poll_until(Duration::from_secs(15), || {
        scrape(&lab, &script, "text").ok().filter(want)
    })
    .unwrap_or_else(|| {
        let last = scrape(&lab, &script, "text").unwrap_or_else(|e| panic!("{e}"));
        panic!(
            "the scrape never showed the session, the traffic, the rejection and the failure:\n{}\nserver log:\n{}",
            last.raw,
            tail(&server.log(), 30)
        )
    });
    let msg = || format!("{}\nserver log:\n{}", text.raw, tail(&server.log(), 30));
    // Shown with --nocapture (and kept with a failure's output).
    eprintln!("final scrape (text format, as parsed):\n{}", text.raw);

    // Families and their types, as the text-format parser reads them.
    for (family, ty) in [
        ("warren_sessions", "gauge"),
        ("warren_build_info", "gauge"),
        ("warren_link_bytes", "counter"),
        ("warren_link_packets", "counter"),
        ("warren_tun_bytes", "counter"),
        ("warren_tun_packets", "counter"),
        ("warren_handshake_failures", "counter"),
        ("warren_auth", "counter"),
        ("warren_dropped_packets", "counter"),
        ("warren_disconnects", "counter"),
        ("warren_thread_busy_seconds", "counter"),
        ("warren_handshake_duration_seconds", "histogram"),
    ] {
        assert_eq!(text.family_type(family), Some(ty), "{family}: {}", msg());
    }
    // Sessions: alice only (bob and mallory never connected).
    assert_eq!(
        text.sum("warren_sessions", &[("state", "connected")]),
        1.0,
        "{}",
        msg()
    );
    assert_eq!(
        text.sum("warren_handshakes_completed_total", &[]),
        1.0,
        "{}",
        msg()
    );
    // Bytes: alice's 3 MB arrived over the link (with OpenVPN's overhead) and went into the
    // tun; her TCP acknowledgements went the other way.
    let link_rx = text.sum("warren_link_bytes_total", &[("direction", "rx")]);
    let tun_tx = text.sum("warren_tun_bytes_total", &[("direction", "tx")]);
    assert!(
        link_rx > tun_tx && tun_tx >= SENT as f64,
        "link rx {link_rx}, tun tx {tun_tx}: {}",
        msg()
    );
    assert!(text.sum("warren_link_packets_total", &[("direction", "rx")]) > 0.0);
    assert!(text.sum("warren_link_bytes_total", &[("direction", "tx")]) > 0.0);
    assert!(text.sum("warren_tun_bytes_total", &[("direction", "rx")]) > 0.0);
    // Per-thread series carry a thread label; thread 0 always exists.
    assert!(
        text.samples
            .iter()
            .any(|(n, l, _)| n == "warren_link_bytes_total"
                && l.get("thread").is_some_and(|t| t == "0")),
        "{}",
        msg()
    );
    assert!(
        text.sum("warren_thread_busy_seconds_total", &[]) > 0.0,
        "{}",
        msg()
    );
    // The failure by reason, and nothing else failed.
    assert!(
        text.sum(
            "warren_handshake_failures_total",
            &[("reason", "certificate")]
        ) >= 1.0,
        "{}",
        msg()
    );
    assert_eq!(
        text.sum("warren_handshake_failures_total", &[("reason", "timeout")]),
        0.0,
        "{}",
        msg()
    );
    // Authentication: alice accepted, bob rejected (the stock client does not retry).
    assert_eq!(
        text.sum("warren_auth_total", &[("result", "accepted")]),
        1.0,
        "{}",
        msg()
    );
    assert_eq!(
        text.sum("warren_auth_total", &[("result", "rejected")]),
        1.0,
        "{}",
        msg()
    );
    // The histogram: one connection observed, and its buckets are cumulative.
    assert_eq!(
        text.sum("warren_handshake_duration_seconds_count", &[]),
        1.0,
        "{}",
        msg()
    );
    assert_eq!(
        text.sum(
            "warren_handshake_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        1.0,
        "{}",
        msg()
    );
    assert!(text.sum("warren_handshake_duration_seconds_sum", &[]) > 0.0);
    // Drops by reason are all listed (zeros included).
    assert!(
        text.samples
            .iter()
            .filter(|(n, _, _)| n == "warren_dropped_packets_total")
            .count()
            >= 15,
        "{}",
        msg()
    );

    // The same scrape in OpenMetrics, through the strict parser.
    let om = scrape(&lab, &script, "openmetrics").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        om.content_type.starts_with("application/openmetrics-text"),
        "{}",
        om.content_type
    );
    assert_eq!(
        om.family_type("warren_link_bytes"),
        Some("counter"),
        "{}",
        om.raw
    );
    assert_eq!(
        om.families
            .get("warren_link_bytes")
            .map(|(_, u)| u.as_str()),
        Some("bytes"),
        "{}",
        om.raw
    );
    assert_eq!(
        om.family_type("warren_handshake_duration_seconds"),
        Some("histogram"),
        "{}",
        om.raw
    );
    assert_eq!(om.sum("warren_sessions", &[("state", "connected")]), 1.0);
    assert!(
        om.has("warren_handshake_duration_seconds_count"),
        "{}",
        om.raw
    );

    // Anything but GET /metrics is refused; the server is unharmed.
    let other = lab.server_ns.exec(
        &[
            "/usr/bin/python3",
            "-c",
            "import urllib.request, urllib.error, sys\ntry:\n    urllib.request.urlopen(sys.argv[1], timeout=5)\nexcept urllib.error.HTTPError as e:\n    print(e.code)",
            &format!("http://{METRICS_ADDR}/"),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(
        other.stdout.trim(),
        "404",
        "{}{}",
        other.stdout,
        other.stderr
    );
    assert!(server.proc.is_running(), "{}", tail(&server.log(), 30));
    drop(alice);
    server.stop();
}
