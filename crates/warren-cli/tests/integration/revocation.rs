//! Issue 4: revocation is immediate. `warren pki revoke`, `warren user disable` and `warren
//! user del`, run as separate processes against the state directory of a running `warren
//! server`, end the user's live session (during a transfer) within a second, and the
//! reconnection that follows is refused; other users' transfers go on untouched. `warren user
//! enable` lets the user back in, without restarting the server.
//!
//! Needs root (network namespaces) and `openvpn`.

#![allow(clippy::disallowed_methods)]

use crate::common;
use crate::state_common;

use std::time::{Duration, Instant};

use common::lab::{Lab, ServerKind, Transfer};
use state_common::{
    BgTransfer, PUSHED_RESET, SERVER_VPN_IP, Warren, ZeroServer, connect, expect_auth_failed_after,
    lines_with,
};

/// "Within a second" of the admin command returning.
const KICK_LIMIT: Duration = Duration::from_secs(1);
const RATE: u64 = 512 * 1024;

/// Runs an admin command and returns how long after it returned the server logged that it
/// ended `user`'s session.
fn kick_latency(w: &Warren, server: &ZeroServer, args: &[&str], user: &str) -> Duration {
    w.ok(args);
    let t0 = Instant::now();
    let pattern = format!("session(s) of {user}:");
    common::process::poll_until(Duration::from_secs(10), || {
        server.log().contains(&pattern).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "`warren {args:?}` did not end {user}'s session:\n{}",
            common::process::tail(&server.log(), 30)
        )
    });
    t0.elapsed()
}

#[test]
fn revoke_disable_and_delete_end_sessions_at_once() {
    let mut lab = Lab::p256("revoke", ServerKind::Warren);
    let state = lab.dir().join("state");
    let w = Warren::new(&state);
    let server = ZeroServer::start(&lab, &state, &[]);
    for u in ["alice", "bob", "carol", "dave"] {
        w.add_user(u, &[]);
    }
    let mut alice = connect(&mut lab, &server, &w, "alice", "alice", None, &[]);
    let mut bob = connect(&mut lab, &server, &w, "bob", "bob", None, &[]);
    let carol = connect(&mut lab, &server, &w, "carol", "carol", None, &[]);
    let mut dave = connect(&mut lab, &server, &w, "dave", "dave", None, &[]);

    // Everyone transfers; carol's must come through intact while the others are cut off.
    let secs = Duration::from_secs(8);
    let t_alice = BgTransfer::start(
        &lab,
        "alice",
        &alice.ns,
        &lab.server_ns,
        SERVER_VPN_IP,
        6001,
        secs,
        RATE,
    );
    let t_bob = BgTransfer::start(
        &lab,
        "bob",
        &bob.ns,
        &lab.server_ns,
        SERVER_VPN_IP,
        6002,
        secs,
        RATE,
    );
    let t_carol = BgTransfer::start(
        &lab,
        "carol",
        &carol.ns,
        &lab.server_ns,
        SERVER_VPN_IP,
        6003,
        secs,
        RATE,
    );
    std::thread::sleep(Duration::from_secs(1));

    let revoke = kick_latency(&w, &server, &["pki", "revoke", "alice"], "alice");
    let disable = kick_latency(&w, &server, &["user", "disable", "bob"], "bob");
    let delete = kick_latency(&w, &server, &["user", "del", "dave"], "dave");
    eprintln!(
        "sessions ended {revoke:?} (revoke), {disable:?} (disable), {delete:?} (del) after the command"
    );
    for (what, d) in [("revoke", revoke), ("disable", disable), ("del", delete)] {
        assert!(
            d <= KICK_LIMIT,
            "{what}: the session ended only after {d:?}"
        );
    }
    let log = server.log();
    assert!(
        log.contains("session(s) of alice: certificate"),
        "{}",
        lines_with(&log, "session(s)")
    );
    assert!(
        log.contains("session(s) of bob: user disabled"),
        "{}",
        lines_with(&log, "session(s)")
    );
    assert!(
        log.contains("session(s) of dave: user deleted"),
        "{}",
        lines_with(&log, "session(s)")
    );

    // The clients were told to reconnect, and their reconnection is refused.
    for c in [&mut alice, &mut bob, &mut dave] {
        c.proc
            .wait_for_line(PUSHED_RESET, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        expect_auth_failed_after(&mut c.proc, PUSHED_RESET, Duration::from_secs(30));
    }
    let log = server.log();
    assert!(
        log.contains("login refused user=\"alice\""),
        "{}",
        lines_with(&log, "login")
    );
    assert!(
        log.contains("login refused user=\"bob\""),
        "{}",
        lines_with(&log, "login")
    );
    assert!(
        log.contains("login refused user=\"dave\""),
        "{}",
        lines_with(&log, "login")
    );

    // carol never noticed.
    t_carol.assert_intact(Duration::from_secs(40));
    assert!(!carol.proc.log().contains(PUSHED_RESET), "carol was kicked");
    drop(t_alice);
    drop(t_bob);

    // bob enabled again: he gets back in, with his old address, no server restart.
    let bob_ip = bob.addr().to_owned();
    drop(bob);
    w.ok(&["user", "enable", "bob"]);
    let bob = connect(&mut lab, &server, &w, "bob2", "bob", None, &[]);
    assert_eq!(bob.addr(), bob_ip);
    lab.transfer(
        &bob.ns,
        &lab.server_ns,
        SERVER_VPN_IP,
        &Transfer::bytes(1024 * 1024),
    )
    .assert_intact();
}
