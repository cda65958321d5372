//! The stateful engine target is only useful if its seeds reach the states behind the
//! handshake: check that they connect and carry data, in every wrapping mode, and that a
//! replay or a corrupted datagram is never accepted on the way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn seed(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus/engine")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn seeds_connect_and_carry_data_both_ways() {
    for name in [
        "connect_tls_crypt",
        "connect_tls_auth_prf",
        "connect_none_chacha",
    ] {
        let run = warren_fuzz::run_engine(&seed(name));
        assert!(run.connected, "{name}: never connected: {run:?}");
        assert!(
            run.server_opened >= 1,
            "{name}: server opened no data: {run:?}"
        );
        assert!(
            run.client_opened >= 1,
            "{name}: client opened no data: {run:?}"
        );
    }
}

#[test]
fn external_auth_accept_connects_and_reject_does_not() {
    let accept = warren_fuzz::run_engine(&seed("external_auth_accept"));
    assert!(accept.connected, "{accept:?}");
    assert!(accept.server_opened >= 1, "{accept:?}");
    let reject = warren_fuzz::run_engine(&seed("external_auth_reject"));
    assert!(!reject.connected, "{reject:?}");
}

#[test]
fn replays_in_the_seed_are_refused() {
    // The seed replays the server's history and re-sends a client datagram from a stranger
    // address; the target panics if any data datagram is accepted twice.
    let run = warren_fuzz::run_engine(&seed("corrupt_and_replay"));
    assert!(run.connected, "{run:?}");
}
