//! Issue 10 (hardening) for the state directory, through the binary:
//!
//! * a state directory that lost its CA certificate, CA key, tls-crypt key or database is
//!   refused by `warren pki init`, `warren user add`, `warren user list` and `warren server`
//!   with the missing file named, and nothing is generated over it (the CA key is unchanged,
//!   the database keeps one CA);
//! * concurrent first runs on one empty directory (`pki init` ×10 with `user add` ×2) all
//!   succeed and agree on one CA that signed the server and client certificates.
//!
//! `warren server` runs inside a network namespace of its own (root needed); the rest needs
//! `openssl` only.

#![allow(clippy::disallowed_methods)]

use crate::common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::WARREN_BIN;
use common::netns::Netns;
use common::process::run_bounded;
use warren_store::{CertFilter, SqliteStore, Store};

struct Run {
    ok: bool,
    stderr: String,
}

fn warren(state: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(WARREN_BIN);
    cmd.args(args)
        .arg("--state-dir")
        .arg(state)
        .env_remove("WARREN_STATE_DIR")
        .stdin(Stdio::null());
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    Run {
        ok: out.success(),
        stderr: out.stderr,
    }
}

fn ca_rows(state: &Path) -> usize {
    let store = SqliteStore::open(&state.join("warren.db")).expect("open db");
    store
        .certs(&CertFilter::default())
        .expect("certs")
        .iter()
        .filter(|c| c.kind == warren_pki::CertKind::Ca)
        .count()
}

/// A complete state with one user.
fn make_state(state: &Path) {
    let r = warren(state, &["pki", "init"]);
    assert!(r.ok, "{}", r.stderr);
    let r = warren(state, &["user", "add", "alice", "--no-password"]);
    assert!(r.ok, "{}", r.stderr);
}

fn remove(state: &Path, files: &[&str]) {
    for f in files {
        match fs::remove_file(state.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("rm {f}: {e}"),
        }
    }
}

#[test]
fn lost_key_material_is_refused_not_regenerated() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ns = Netns::new();
    let cases: &[(&str, &[&str], &str)] = &[
        ("ca-crt", &["pki/ca.crt"], "ca.crt is missing"),
        ("ca-both", &["pki/ca.crt", "pki/ca.key"], "ca.key"),
        ("ca-key", &["pki/ca.key"], "ca.key is missing"),
        ("tls-crypt", &["tls-crypt.key"], "tls-crypt.key is missing"),
        (
            "db",
            &["warren.db", "warren.db-wal", "warren.db-shm"],
            "warren.db is missing",
        ),
    ];
    for (tag, files, expect) in cases {
        let state = tmp.path().join(tag);
        make_state(&state);
        let ca_key = fs::read(state.join("pki/ca.key")).expect("ca.key");
        let ca_crt = fs::read(state.join("pki/ca.crt")).expect("ca.crt");
        let tls = fs::read(state.join("tls-crypt.key")).expect("tls-crypt");
        remove(&state, files);

        for args in [
            &["pki", "init"][..],
            &["user", "add", "bob", "--no-password"],
            &["user", "list"],
            &["profile", "export", "alice", "--remote", "192.0.2.1"],
        ] {
            let r = warren(&state, args);
            assert!(!r.ok, "{tag}: warren {args:?} accepted a damaged state");
            assert!(
                r.stderr.contains(expect) && r.stderr.contains("backup"),
                "{tag}: warren {args:?}: {}",
                r.stderr
            );
        }
        // The server refuses too (in a namespace of its own, should it ever start).
        let dev = common::netns::unique_name("tun", 'h');
        let out = ns.exec(
            &[
                WARREN_BIN,
                "server",
                "--state-dir",
                state.to_str().expect("utf8"),
                "--dev",
                &dev,
                "--port",
                "1194",
            ],
            Duration::from_secs(30),
        );
        assert!(
            !out.success() && !out.timed_out(),
            "{tag}: the server started on a damaged state: {}",
            out.stderr
        );
        assert!(out.stderr.contains(expect), "{tag}: {}", out.stderr);

        // Nothing was generated over what is left.
        for (f, before) in [
            ("pki/ca.key", &ca_key),
            ("pki/ca.crt", &ca_crt),
            ("tls-crypt.key", &tls),
        ] {
            if files.contains(&f) {
                assert!(!state.join(f).exists(), "{tag}: {f} was regenerated");
            } else {
                assert_eq!(
                    &fs::read(state.join(f)).expect("read"),
                    before,
                    "{tag}: {f} changed"
                );
            }
        }
        if state.join("warren.db").exists() {
            assert_eq!(ca_rows(&state), 1, "{tag}: a second CA in the database");
        }

        // Restoring the files makes the state work again, unchanged.
        if files.contains(&"pki/ca.crt") {
            fs::write(state.join("pki/ca.crt"), &ca_crt).expect("restore");
        }
        if files.contains(&"pki/ca.key") {
            fs::write(state.join("pki/ca.key"), &ca_key).expect("restore");
        }
        if files.contains(&"tls-crypt.key") {
            fs::write(state.join("tls-crypt.key"), &tls).expect("restore");
        }
        if !files.contains(&"warren.db") {
            let r = warren(&state, &["user", "add", "carol", "--no-password"]);
            assert!(r.ok, "{tag}: after restoring: {}", r.stderr);
            assert_eq!(ca_rows(&state), 1, "{tag}");
        }
    }

    // An empty database next to the PKI.
    let state = tmp.path().join("empty-db");
    make_state(&state);
    remove(&state, &["warren.db", "warren.db-wal", "warren.db-shm"]);
    fs::write(state.join("warren.db"), "").expect("empty db");
    let r = warren(&state, &["user", "list"]);
    assert!(!r.ok && r.stderr.contains("warren.db"), "{}", r.stderr);
    let r = warren(&state, &["pki", "init"]);
    assert!(!r.ok && r.stderr.contains("warren.db"), "{}", r.stderr);
}

fn openssl_verify(ca: &Path, cert: &Path) -> (bool, String) {
    let out = run_bounded(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(ca)
            .arg(cert),
        Duration::from_secs(20),
    );
    (out.success(), format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn concurrent_first_runs_agree_on_one_ca() {
    for round in 0..3 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        let mut children = Vec::new();
        for i in 0..12 {
            let mut cmd = Command::new(WARREN_BIN);
            if i % 6 == 5 {
                cmd.args(["user", "add", &format!("u{i}"), "--no-password"]);
            } else {
                cmd.args(["pki", "init"]);
            }
            cmd.arg("--state-dir")
                .arg(&state)
                .env_remove("WARREN_STATE_DIR")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            children.push(cmd.spawn().expect("spawn"));
        }
        for (i, c) in children.into_iter().enumerate() {
            let out = c.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "round {round}, process {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(ca_rows(&state), 1, "round {round}: several CAs");
        let ca = state.join("pki/ca.crt");
        let (good, text) = openssl_verify(&ca, &state.join("pki/server.crt"));
        assert!(good, "round {round}: server certificate: {text}");
        // The users' certificates come from the same CA.
        let store = SqliteStore::open(&state.join("warren.db")).expect("open");
        let users = store.users().expect("users");
        assert_eq!(users.len(), 2, "round {round}");
        for rec in store.certs(&CertFilter::default()).expect("certs") {
            if rec.kind != warren_pki::CertKind::Client {
                continue;
            }
            let pem = rec.cert_pem.expect("pem");
            let f = tmp.path().join(format!("{}.crt", rec.common_name));
            fs::write(&f, pem).expect("write");
            let (good, text) = openssl_verify(&ca, &f);
            assert!(good, "round {round}: {}: {text}", rec.common_name);
        }
        assert!(!state.join(".init-incomplete").exists());
    }
}

/// Runs `warren ARGS --state-dir STATE` with STATE bind-mounted read-only, in a private mount
/// namespace of its own (the host's mounts are untouched).
fn warren_read_only(state: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(state)
        .arg(WARREN_BIN)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env_remove("WARREN_STATE_DIR")
        .stdin(Stdio::null());
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    (out.success(), out.stdout, out.stderr)
}

#[test]
fn read_only_commands_work_on_a_read_only_state_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    make_state(&state);
    // The mount really is read-only.
    let (ok, _, err) = warren_read_only(&state, &["user", "add", "zoe", "--no-password"]);
    assert!(!ok, "a write succeeded on the read-only mount: {err}");

    let (ok, out, err) = warren_read_only(&state, &["user", "list", "--json"]);
    assert!(ok, "user list: {err}");
    assert!(out.contains("\"alice\""), "{out}");
    let (ok, out, err) = warren_read_only(&state, &["user", "show", "alice"]);
    assert!(ok && out.contains("alice"), "user show: {err}");
    let (ok, out, err) = warren_read_only(&state, &["pki", "list"]);
    assert!(ok && out.contains("alice"), "pki list: {err}");
    let (ok, out, err) = warren_read_only(
        &state,
        &["profile", "export", "alice", "--remote", "192.0.2.1"],
    );
    assert!(ok && out.contains("<tls-crypt>"), "profile export: {err}");
}

#[test]
fn a_world_writable_state_dir_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    make_state(&state);
    let r = warren(&state, &["user", "list"]);
    assert!(
        r.ok && !r.stderr.contains("writable by every user"),
        "{}",
        r.stderr
    );
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).expect("chmod");
    let r = warren(&state, &["user", "list"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("writable by every user") && r.stderr.contains("chmod 700"),
        "{}",
        r.stderr
    );
}
