//! Crash safety: `warren user add` processes (and the first-run bootstrap they trigger) are
//! killed with SIGKILL at random moments; after every kill the state directory must still
//! load, and every user must have come with its certificate or not at all.

// The harness is a driver: it sleeps and reads the clock.
#![allow(clippy::disallowed_methods)]

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;
use warren_core::TestRng;
use warren_store::{SqliteStore, Store};

use crate::common::lab::WARREN_BIN;

fn list_users(state: &std::path::Path) -> Value {
    let out = Command::new(WARREN_BIN)
        .args(["user", "list", "--json", "--state-dir"])
        .arg(state)
        .stdin(Stdio::null())
        .output()
        .expect("run warren");
    assert!(
        out.status.success(),
        "the state no longer loads after a kill:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn killed_user_add_never_breaks_the_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let mut rng = TestRng::seed(0x5eed);

    // How long one `user add` takes here, to spread the kills over its whole life.
    let t0 = Instant::now();
    let probe = tmp.path().join("probe");
    let st = Command::new(WARREN_BIN)
        .args(["user", "add", "probe", "--no-password", "--state-dir"])
        .arg(&probe)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run warren");
    assert!(st.success());
    let span = u64::try_from(t0.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1000);

    let mut killed = 0;
    let mut completed = 0;
    for i in 0..40 {
        let mut child = Command::new(WARREN_BIN)
            .args([
                "user",
                "add",
                &format!("u{i}"),
                "--no-password",
                "--state-dir",
            ])
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        sleep(Duration::from_micros(rng.below(span * 3 / 4)));
        match child.try_wait().expect("try_wait") {
            Some(_) => completed += 1,
            None => {
                child.kill().expect("kill");
                child.wait().expect("reap");
                killed += 1;
            }
        }

        // The database opens and is sound.
        if state.join("warren.db").exists() {
            let store = SqliteStore::open(&state.join("warren.db")).expect("database opens");
            assert!(
                store.quick_check().expect("quick_check"),
                "database corrupt after kill {i}"
            );
            drop(store);
        }
        // Killed during the very first run before the CA existed: nothing usable was made
        // yet, and no user can exist (users need the CA). The next `user add` completes it.
        if !state.join("pki/ca.crt").exists() {
            if state.join("warren.db").exists() {
                let store = SqliteStore::open(&state.join("warren.db")).expect("open");
                assert!(store.users().expect("users").is_empty());
            }
            continue;
        }
        // The whole state loads (this also completes an interrupted first run), and every
        // user that exists has its certificate: user and certificate are one transaction.
        let users = list_users(&state);
        for u in users.as_array().expect("array") {
            assert!(
                u["certificate_expires"].is_string(),
                "user without certificate after kill {i}: {u}"
            );
        }
    }
    assert!(killed > 5, "only {killed} of 40 runs were killed");
    eprintln!("{killed} killed, {completed} completed");

    // After all that, the state still works end to end.
    let st = Command::new(WARREN_BIN)
        .args(["user", "add", "final", "--no-password", "--state-dir"])
        .arg(&state)
        .stdin(Stdio::null())
        .status()
        .expect("run");
    assert!(st.success());
    let out = Command::new(WARREN_BIN)
        .args([
            "profile",
            "export",
            "final",
            "--remote",
            "vpn.example.org",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = SqliteStore::open(&state.join("warren.db")).expect("open");
    assert!(store.user("final").expect("q").is_some());
}
