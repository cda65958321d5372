//! Replays the committed corpus: every file under `corpus/<target>/` goes through the
//! target of that name. A panic names the file. This is how CI runs the fuzz targets on
//! stable without libFuzzer.

use std::path::{Path, PathBuf};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in warren_fuzz::TARGETS {
        let dir = corpus_root().join(name);
        let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert!(n > 0, "no seed corpus in {}", dir.display());
    }
}

#[test]
fn every_corpus_dir_has_a_target() {
    for entry in std::fs::read_dir(corpus_root()).expect("corpus dir") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            warren_fuzz::TARGETS.iter().any(|(t, _)| *t == name),
            "corpus/{name} has no target in warren_fuzz::TARGETS"
        );
    }
}

#[test]
fn replay_corpus() {
    let mut files = 0;
    for (name, target) in warren_fuzz::TARGETS {
        let dir = corpus_root().join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("entry").path()).collect();
        paths.sort();
        for path in paths {
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).expect("read corpus file");
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(
                result.is_ok(),
                "target {name} panicked on {}",
                path.display()
            );
            files += 1;
        }
    }
    assert!(files > 0);
    eprintln!("replayed {files} corpus files");
}

/// The crypto seeds must get past authentication with the targets' fixed keys, or the
/// fuzzer starts from nothing useful.
#[test]
fn lab_seeds_authenticate() {
    use warren_crypto::{CipherKind, ControlWrap, DataKeys, Key2, Role, StaticKey};
    let read = |t: &str, f: &str| std::fs::read(corpus_root().join(t).join(f)).expect("seed");

    let pem = String::from_utf8(read("static_key", "lab")).expect("utf8");
    let key = StaticKey::parse(&pem).expect("lab key parses");
    let mut body = Vec::new();
    let server = ControlWrap::tls_crypt(&key, Role::Server);
    server
        .unwrap(
            &read("control_wrap", "lab_client_reset_tls_crypt"),
            &mut body,
        )
        .expect("client reset");
    assert_eq!(body, [0, 0, 0, 0, 0]);
    let client = ControlWrap::tls_crypt(&key, Role::Client);
    client
        .unwrap(
            &read("control_wrap", "lab_server_reset_tls_crypt"),
            &mut body,
        )
        .expect("server reset");
    assert_eq!(body.len(), 17);

    let mut k = [0u8; 256];
    let hexb = |s: &str| {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
    };
    k[..32].copy_from_slice(&hexb(
        "f020933031a3292d44f862c4d446baf8755947bec58ee9e3b301c3958b7c6595",
    ));
    k[64..72].copy_from_slice(&hexb("157afce1d5000f61"));
    let keys = DataKeys::new(CipherKind::Aes256Gcm, &Key2::from_bytes(k), Role::Server);
    let mut pkt = read("data_open", "lab_ping_kid1");
    let (pid, range) = keys.open(&mut pkt).expect("lab data packet opens");
    assert_eq!(pid, 1);
    assert!(warren_wire::is_ping(&pkt[range]));

    // tls-crypt-v2: the stock client's packets unwrap with the lab server key.
    let v2 = warren_crypto::TlsCryptV2ServerKey::parse(warren_fuzz::LAB_TLS_CRYPT_V2_SERVER_KEY)
        .expect("lab server key")
        .wrapper();
    for seed in ["stock_v3_reset", "stock_wkc_v1"] {
        let pkt = read("tls_crypt_v2", seed);
        let (packet, wkc) = warren_crypto::split_wkc(&pkt).expect(seed);
        let (kc, _) = v2.unwrap_client_key(wkc).expect(seed);
        ControlWrap::tls_crypt(&kc, Role::Server)
            .unwrap(packet, &mut body)
            .expect(seed);
    }
}
