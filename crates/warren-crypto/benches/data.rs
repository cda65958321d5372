//! Data-channel crypto benches: what the fast data plane (issue 5) pays per packet.
//!
//! * `seal/<cipher>/<size>` and `open/<cipher>/<size>`: [`DataKeys::seal`]/[`DataKeys::open`]
//!   in place, P_DATA_V2 framing, for 64, 512, 1400, 8192 and 65000-byte plaintexts.
//! * `batch64x1400/<cipher>/{seal,open}`: 64 packets of 1400 bytes in one go, the shape of
//!   one TUN super-packet after the GSO split (or one UDP GRO read).
//! * CBC + HMAC (`aes256cbc-sha256`, `aes128cbc-sha1`) in the same groups, for legacy
//!   peers (buffers carry `DATA_TAILROOM`).
//! * `raw1400/<backend>-<cipher>/{seal,open}`: the bare AEAD call of aws-lc-rs and of ring
//!   (`LessSafeKey::{seal_in_place_separate_tag, open_in_place_separate_tag}`) on 1400 bytes,
//!   to choose the backend on the deployment CPU (crates.md §4 and §12.1).
//!
//! Run: `cargo bench -p warren-crypto -- --warm-up-time 1 --measurement-time 3`. Not run by
//! `cargo test` (benches are only built with `--benches`/`--all-targets`).
//!
//! Opening destroys the ciphertext, so the open benches restore the packet from a copy in
//! criterion's untimed setup (`iter_batched_ref`).
#![allow(clippy::unwrap_used)] // bench setup on fixed, valid inputs

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use warren_core::KeyId;
use warren_crypto::{
    CipherKind, DATA_HEADROOM, DATA_TAILROOM, DataHeader, DataKeys, Digest, Key2, Role,
};

const SIZES: [usize; 5] = [64, 512, 1400, 8192, 65000];
const BATCH: usize = 64;
const BATCH_PACKET: usize = 1400;

const CIPHERS: [(CipherKind, &str); 5] = [
    (CipherKind::Aes256Gcm, "aes256gcm"),
    (CipherKind::Aes128Gcm, "aes128gcm"),
    (CipherKind::ChaCha20Poly1305, "chacha20poly1305"),
    (CipherKind::Aes256Cbc(Digest::Sha256), "aes256cbc-sha256"),
    (CipherKind::Aes128Cbc(Digest::Sha1), "aes128cbc-sha1"),
];

fn key2() -> Key2 {
    let mut b = [0u8; 256];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    Key2::from_bytes(b)
}

fn header() -> DataHeader {
    DataHeader {
        key_id: KeyId::from_low_bits(1),
        peer_id: Some(7),
    }
}

/// A sealed V2 packet of `size` plaintext bytes from the client, for the server to open.
fn sealed(client: &DataKeys, size: usize, pid: u32) -> Vec<u8> {
    let mut buf = vec![0x5au8; DATA_HEADROOM + size + DATA_TAILROOM];
    let r = client.seal_in(header(), pid, &mut buf, size);
    buf[r].to_vec()
}

fn per_size(c: &mut Criterion) {
    let k2 = key2();
    for (kind, name) in CIPHERS {
        let client = DataKeys::new(kind, &k2, Role::Client);
        let server = DataKeys::new(kind, &k2, Role::Server);
        let mut g = c.benchmark_group(format!("seal/{name}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            // CBC moves the payload into the tailroom; each seal starts from the same
            // plaintext position, so the (in-place) work is the same every time.
            let mut buf = vec![0x5au8; DATA_HEADROOM + size + DATA_TAILROOM];
            let mut pid = 0u32;
            g.bench_function(size.to_string(), |b| {
                b.iter(|| {
                    pid = pid.wrapping_add(1);
                    black_box(client.seal_in(header(), pid, black_box(&mut buf), size))
                })
            });
        }
        g.finish();
        let mut g = c.benchmark_group(format!("open/{name}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let packet = sealed(&client, size, 1);
            g.bench_function(size.to_string(), |b| {
                b.iter_batched_ref(
                    || packet.clone(),
                    |p| black_box(server.open(black_box(p)).unwrap()),
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

fn batches(c: &mut Criterion) {
    let k2 = key2();
    for (kind, name) in CIPHERS {
        let client = DataKeys::new(kind, &k2, Role::Client);
        let server = DataKeys::new(kind, &k2, Role::Server);
        let mut g = c.benchmark_group(format!("batch{BATCH}x{BATCH_PACKET}/{name}"));
        g.throughput(Throughput::Bytes((BATCH * BATCH_PACKET) as u64));
        let mut bufs = vec![vec![0x5au8; DATA_HEADROOM + BATCH_PACKET + DATA_TAILROOM]; BATCH];
        let mut pid = 0u32;
        g.bench_function("seal", |b| {
            b.iter(|| {
                for buf in bufs.iter_mut() {
                    pid = pid.wrapping_add(1);
                    black_box(client.seal_in(header(), pid, buf, BATCH_PACKET));
                }
            })
        });
        let packets: Vec<Vec<u8>> = (0..BATCH as u32)
            .map(|i| sealed(&client, BATCH_PACKET, i + 1))
            .collect();
        g.bench_function("open", |b| {
            b.iter_batched_ref(
                || packets.clone(),
                |ps| {
                    for p in ps.iter_mut() {
                        black_box(server.open(p).unwrap());
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

/// The bare AEAD calls of both backends, same layout as `DataKeys` (separate tag, 8-byte
/// AAD, 12-byte nonce), so the only difference is the library.
fn raw_backends(c: &mut Criterion) {
    const N: usize = 1400;
    let key = [0x42u8; 32];
    let aad = [0x48u8, 0, 0, 7, 0, 0, 0, 1];
    let mut g = c.benchmark_group("raw1400");
    g.throughput(Throughput::Bytes(N as u64));

    let aws_algs: [(&str, &'static aws_lc_rs::aead::Algorithm); 2] = [
        ("aes256gcm", &aws_lc_rs::aead::AES_256_GCM),
        ("chacha20poly1305", &aws_lc_rs::aead::CHACHA20_POLY1305),
    ];
    for (name, alg) in aws_algs {
        use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
        let k = LessSafeKey::new(UnboundKey::new(alg, &key).unwrap());
        let mut buf = vec![0x5au8; N];
        let mut ctr = 0u32;
        g.bench_function(format!("aws-lc-rs-{name}/seal"), |b| {
            b.iter(|| {
                ctr = ctr.wrapping_add(1);
                let mut n = [0u8; 12];
                n[..4].copy_from_slice(&ctr.to_be_bytes());
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from(&aad[..]),
                        black_box(&mut buf[..]),
                    )
                    .unwrap();
                black_box(tag)
            })
        });
        let mut ct = vec![0x5au8; N];
        let tag = k
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1u8; 12]),
                Aad::from(&aad[..]),
                &mut ct,
            )
            .unwrap();
        let tag: Vec<u8> = tag.as_ref().to_vec();
        g.bench_function(format!("aws-lc-rs-{name}/open"), |b| {
            b.iter_batched_ref(
                || ct.clone(),
                |p| {
                    black_box(
                        k.open_in_place_separate_tag(
                            Nonce::assume_unique_for_key([1u8; 12]),
                            Aad::from(&aad[..]),
                            &tag,
                            p,
                        )
                        .unwrap()
                        .len(),
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }

    let ring_algs: [(&str, &'static ring::aead::Algorithm); 2] = [
        ("aes256gcm", &ring::aead::AES_256_GCM),
        ("chacha20poly1305", &ring::aead::CHACHA20_POLY1305),
    ];
    for (name, alg) in ring_algs {
        use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey};
        let k = LessSafeKey::new(UnboundKey::new(alg, &key).unwrap());
        let mut buf = vec![0x5au8; N];
        let mut ctr = 0u32;
        g.bench_function(format!("ring-{name}/seal"), |b| {
            b.iter(|| {
                ctr = ctr.wrapping_add(1);
                let mut n = [0u8; 12];
                n[..4].copy_from_slice(&ctr.to_be_bytes());
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from(&aad[..]),
                        black_box(&mut buf[..]),
                    )
                    .unwrap();
                black_box(tag)
            })
        });
        let mut ct = vec![0x5au8; N];
        let tag = k
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1u8; 12]),
                Aad::from(&aad[..]),
                &mut ct,
            )
            .unwrap();
        let tag = Tag::try_from(tag.as_ref()).unwrap();
        g.bench_function(format!("ring-{name}/open"), |b| {
            b.iter_batched_ref(
                || ct.clone(),
                |p| {
                    black_box(
                        k.open_in_place_separate_tag(
                            Nonce::assume_unique_for_key([1u8; 12]),
                            Aad::from(&aad[..]),
                            tag,
                            p,
                            0..,
                        )
                        .unwrap()
                        .len(),
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, per_size, batches, raw_backends);
criterion_main!(benches);
