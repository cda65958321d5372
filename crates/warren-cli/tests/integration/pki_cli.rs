//! `warren pki`, `warren user` and `warren profile` end to end through the binary, checked
//! with the `openssl` CLI, the stock `openvpn` option parser and `warren-config`.
//! Needs `openssl`, `openvpn` and Debian's `easy-rsa` package; no root.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::lab::WARREN_BIN;
use crate::common::pki::easyrsa_pki;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn warren(state: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(WARREN_BIN);
    cmd.args(args)
        .arg("--state-dir")
        .arg(state)
        .env_remove("WARREN_STATE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn warren");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out: Output = child.wait_with_output().expect("wait");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(state: &Path, args: &[&str]) -> Run {
    let r = warren(state, args, None);
    assert!(r.ok, "warren {args:?} failed:\n{}{}", r.stdout, r.stderr);
    r
}

fn json(state: &Path, args: &[&str]) -> Value {
    let r = ok(state, args);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", r.stdout))
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The body of `<tag>...</tag>` in a profile.
fn block(profile: &str, tag: &str) -> String {
    let start = profile
        .find(&format!("<{tag}>\n"))
        .unwrap_or_else(|| panic!("no <{tag}>"));
    let rest = &profile[start + tag.len() + 3..];
    let end = rest.find(&format!("</{tag}>")).expect("closing tag");
    rest[..end].to_owned()
}

fn by_name<'a>(list: &'a Value, key: &str, name: &str) -> Vec<&'a Value> {
    list.as_array()
        .expect("array")
        .iter()
        .filter(|v| v[key] == name)
        .collect()
}

/// Exports NAME's profile, checks it with warren-config and stock openvpn, and returns it.
fn export_and_check(state: &Path, dir: &Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["profile", "export", name, "--remote", "vpn.example.org"];
    args.extend_from_slice(extra);
    let profile = ok(state, &args).stdout;
    let path = dir.join(format!("{name}.ovpn"));
    fs::write(&path, &profile).expect("write profile");
    let (cfg, warnings) = warren_config::load_client_config(&path).expect("warren-config loads it");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cfg.remotes.len(), 1);
    assert!(cfg.tls_crypt.is_some());
    // Stock openvpn parses every directive and inline block (it exits after --show-ciphers,
    // before connecting).
    let out = Command::new("openvpn")
        .arg("--config")
        .arg(&path)
        .arg("--show-ciphers")
        .output()
        .expect("openvpn");
    assert!(
        out.status.success(),
        "openvpn rejects the profile:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    profile
}

#[test]
fn init_users_profiles_revocation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let s = d.join("state");

    let r = ok(&s, &["pki", "init"]);
    assert!(r.stderr.contains("created CA"), "{}", r.stderr);
    assert!(r.stderr.contains("tls-crypt key"), "{}", r.stderr);
    let r = ok(&s, &["pki", "init"]);
    assert!(r.stderr.contains("already initialised"), "{}", r.stderr);

    ok(&s, &["user", "add", "alice", "--no-password"]);
    let r = warren(
        &s,
        &[
            "user",
            "add",
            "bob",
            "--password-stdin",
            "--fixed-ip",
            "10.8.0.50",
            "--route",
            "192.168.7.0/24",
        ],
        Some("correct horse battery\n"),
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("warren profile export bob"),
        "{}",
        r.stderr
    );
    let r = warren(&s, &["user", "add", "carol"], None);
    assert!(
        !r.ok && r.stderr.contains("--password-stdin"),
        "{}",
        r.stderr
    );
    let r = warren(&s, &["user", "add", "alice", "--no-password"], None);
    assert!(!r.ok && r.stderr.contains("already exists"), "{}", r.stderr);
    let r = warren(&s, &["user", "add", "../x", "--no-password"], None);
    assert!(
        !r.ok && r.stderr.contains("invalid user name"),
        "{}",
        r.stderr
    );

    let users = json(&s, &["user", "list", "--json"]);
    let names: Vec<&str> = users
        .as_array()
        .expect("array")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    let bob = &by_name(&users, "name", "bob")[0];
    assert_eq!(bob["has_password"], true);
    assert_eq!(bob["fixed_ip"], "10.8.0.50");
    assert_eq!(bob["routes"][0], "192.168.7.0/24");
    assert!(bob["certificate_expires"].is_string());
    let table = ok(&s, &["user", "list"]).stdout;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("alice"), "{table}");

    // Profiles: alice (certificate only), bob (certificate + password).
    let alice = export_and_check(&s, d, "alice", &[]);
    assert!(!alice.contains("auth-user-pass"));
    assert!(
        alice.contains("remote-cert-tls server\nverify-x509-name server name\n"),
        "{alice}"
    );
    let bob_profile = export_and_check(&s, d, "bob", &[]);
    assert!(bob_profile.contains("\nauth-user-pass\n"));
    fs::write(d.join("alice.crt"), block(&alice, "cert")).expect("write");
    fs::write(d.join("alice.key"), block(&alice, "key")).expect("write");
    fs::write(d.join("bob.crt"), block(&bob_profile, "cert")).expect("write");
    fs::write(d.join("ca.crt"), block(&alice, "ca")).expect("write");
    assert_eq!(
        fs::read_to_string(d.join("ca.crt")).expect("read").trim(),
        fs::read_to_string(s.join("pki/ca.crt"))
            .expect("read")
            .trim()
    );
    for (file, purpose) in [("alice.crt", "sslclient"), ("bob.crt", "sslclient")] {
        let (good, out) = openssl(
            d,
            &["verify", "-CAfile", "ca.crt", "-purpose", purpose, file],
        );
        assert!(good, "{out}");
    }
    let server_crt = s.join("pki/server.crt");
    let (good, out) = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslserver",
            server_crt.to_str().expect("utf8"),
        ],
    );
    assert!(good, "{out}");
    let (good, out) = openssl(d, &["pkey", "-in", "alice.key", "-noout"]);
    assert!(good, "{out}");
    let (_, subject) = openssl(d, &["x509", "-in", "alice.crt", "-noout", "-subject"]);
    assert!(
        subject.contains("CN = alice") || subject.contains("CN=alice"),
        "{subject}"
    );
    // --out writes a private file.
    ok(
        &s,
        &[
            "profile",
            "export",
            "alice",
            "--remote",
            "vpn.example.org:443",
            "--proto",
            "tcp",
            "--out",
            d.join("a2.ovpn").to_str().expect("utf8"),
        ],
    );
    let text = fs::read_to_string(d.join("a2.ovpn")).expect("read");
    assert!(
        text.contains("proto tcp\nremote vpn.example.org 443\n"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(d.join("a2.ovpn"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let r = warren(
        &s,
        &["profile", "export", "alice", "--remote", "evil\nhost"],
        None,
    );
    assert!(!r.ok);

    // Revocation.
    let r = ok(&s, &["pki", "revoke", "bob", "--reason", "keyCompromise"]);
    assert!(
        r.stderr.contains("revoked client certificate"),
        "{}",
        r.stderr
    );
    let certs = json(&s, &["pki", "list", "--json"]);
    let bob_certs = by_name(&certs, "common_name", "bob");
    assert_eq!(bob_certs.len(), 1);
    assert_eq!(bob_certs[0]["status"], "revoked");
    assert_eq!(bob_certs[0]["reason"], "keyCompromise");
    assert_eq!(
        by_name(&certs, "common_name", "alice")[0]["status"],
        "valid"
    );
    assert_eq!(by_name(&certs, "kind", "ca").len(), 1);
    assert_eq!(by_name(&certs, "kind", "server").len(), 1);
    let table = ok(&s, &["pki", "list"]).stdout;
    assert!(table.contains("in use by this server"), "{table}");
    let r = warren(&s, &["profile", "export", "bob", "--remote", "x"], None);
    assert!(
        !r.ok && r.stderr.contains("no valid certificate"),
        "{}",
        r.stderr
    );
    let crl = ok(&s, &["pki", "crl"]).stdout;
    fs::write(d.join("crl.pem"), &crl).expect("write");
    for (file, good) in [("alice.crt", true), ("bob.crt", false)] {
        let (res, out) = openssl(
            d,
            &[
                "verify",
                "-crl_check",
                "-CRLfile",
                "crl.pem",
                "-CAfile",
                "ca.crt",
                file,
            ],
        );
        assert_eq!(res, good, "{file}: {out}");
    }
    assert_eq!(
        fs::read_to_string(s.join("pki/crl.pem")).expect("read"),
        crl
    );
    // A new certificate for bob makes the profile exportable again.
    ok(&s, &["pki", "issue", "client", "bob"]);
    export_and_check(&s, d, "bob", &[]);

    // Enable/disable/set/passwd/show.
    ok(&s, &["user", "disable", "alice"]);
    let users = json(&s, &["user", "list", "--json"]);
    assert_eq!(by_name(&users, "name", "alice")[0]["enabled"], false);
    ok(&s, &["user", "enable", "alice"]);
    ok(
        &s,
        &[
            "user",
            "set",
            "alice",
            "--fixed-ip",
            "10.8.0.60",
            "--route",
            "10.1.0.0/16",
            "--expires",
            "2030-01-01",
        ],
    );
    let r = warren(&s, &["user", "set", "bob", "--fixed-ip", "10.8.0.60"], None);
    assert!(
        !r.ok && r.stderr.contains("already the fixed address"),
        "{}",
        r.stderr
    );
    let shown = json(&s, &["user", "show", "alice", "--json"]);
    assert_eq!(shown["fixed_ip"], "10.8.0.60");
    assert_eq!(shown["expires_at"], "2030-01-01T00:00:00Z");
    assert_eq!(shown["routes"][0], "10.1.0.0/16");
    assert_eq!(shown["certificates"].as_array().expect("certs").len(), 1);
    ok(&s, &["user", "show", "alice"]);
    ok(&s, &["user", "passwd", "bob", "--clear"]);
    let users = json(&s, &["user", "list", "--json"]);
    assert_eq!(by_name(&users, "name", "bob")[0]["has_password"], false);
    let r = warren(
        &s,
        &["user", "passwd", "alice", "--password-stdin"],
        Some("another secret\n"),
    );
    assert!(r.ok, "{}", r.stderr);

    // Delete: certificates revoked, user gone.
    ok(&s, &["user", "del", "alice"]);
    let certs = json(&s, &["pki", "list", "--json", "--name", "alice"]);
    assert_eq!(certs[0]["status"], "revoked");
    assert_eq!(certs[0]["reason"], "cessationOfOperation");
    assert!(!warren(&s, &["user", "show", "alice"], None).ok);

    // Server certificates: renew in place, issue another with --out.
    let before = fs::read_to_string(&server_crt).expect("read");
    ok(&s, &["pki", "renew"]);
    let after = fs::read_to_string(&server_crt).expect("read");
    assert_ne!(before, after);
    let (good, out) = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslserver",
            server_crt.to_str().expect("utf8"),
        ],
    );
    assert!(good, "{out}");
    ok(
        &s,
        &[
            "pki",
            "issue",
            "server",
            "vpn2.example.org",
            "--out",
            d.to_str().expect("utf8"),
        ],
    );
    let (good, out) = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslserver",
            "vpn2.example.org.crt",
        ],
    );
    assert!(good, "{out}");
}

#[test]
fn commands_on_a_missing_state_say_how_to_create_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = tmp.path().join("nothing");
    let r = warren(&s, &["pki", "list"], None);
    assert!(
        !r.ok && r.stderr.contains("warren pki init"),
        "{}",
        r.stderr
    );
    // `user add` bootstraps the state itself.
    let r = warren(&s, &["user", "add", "dave", "--no-password"], None);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("created CA"), "{}", r.stderr);
}

/// The PEM block of an easy-rsa certificate file (which starts with a text dump).
fn pem_part(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("read");
    let start = text.find("-----BEGIN CERTIFICATE-----").expect("PEM block");
    text[start..].trim().to_owned()
}

#[test]
fn import_easyrsa_pki() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let er: PathBuf = d.join("easyrsa");
    easyrsa_pki(&er, &[]);

    let s = d.join("state");
    let r = ok(&s, &["pki", "import", er.to_str().expect("utf8")]);
    assert!(
        r.stderr.contains("imported CA \"Easy-RSA CA\""),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("uses the imported certificate \"server\""),
        "{}",
        r.stderr
    );

    let certs = json(&s, &["pki", "list", "--json"]);
    let alice = by_name(&certs, "common_name", "alice");
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0]["status"], "valid");
    assert_eq!(alice[0]["has_key"], true);
    let bob = by_name(&certs, "common_name", "bob");
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0]["status"], "revoked");
    let users = json(&s, &["user", "list", "--json"]);
    let names: Vec<&str> = users
        .as_array()
        .expect("array")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alice"], "revoked bob gets no user");

    // The server uses easy-rsa's server certificate and CA.
    assert_eq!(
        fs::read_to_string(s.join("pki/server.crt"))
            .expect("read")
            .trim(),
        pem_part(&er.join("pki/issued/server.crt"))
    );
    // alice's profile carries her easy-rsa certificate.
    let profile = export_and_check(&s, d, "alice", &[]);
    assert_eq!(
        block(&profile, "cert").trim(),
        pem_part(&er.join("pki/issued/alice.crt"))
    );
    // The CRL warren writes lists bob.
    let crl = fs::read_to_string(s.join("pki/crl.pem")).expect("crl");
    fs::write(d.join("crl.pem"), crl).expect("write");
    let bob_file = fs::read_dir(er.join("pki/revoked/certs_by_serial"))
        .expect("dir")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    let (good, out) = openssl(
        d,
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "easyrsa/pki/ca.crt",
            bob_file.to_str().expect("utf8"),
        ],
    );
    assert!(!good && out.contains("revoked"), "{out}");

    // New certificates come from the imported CA.
    ok(&s, &["user", "add", "carol", "--no-password"]);
    let carol = export_and_check(&s, d, "carol", &[]);
    fs::write(d.join("carol.crt"), block(&carol, "cert")).expect("write");
    let (good, out) = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "easyrsa/pki/ca.crt",
            "-purpose",
            "sslclient",
            "carol.crt",
        ],
    );
    assert!(good, "{out}");

    // A second import into a state that has a CA is refused.
    let r = warren(&s, &["pki", "import", er.to_str().expect("utf8")], None);
    assert!(
        !r.ok && r.stderr.contains("already has a CA"),
        "{}",
        r.stderr
    );
}
