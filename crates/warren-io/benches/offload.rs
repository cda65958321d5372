//! Offload tun benches: what the batched data plane (issue 5) pays around the tun, without
//! the system calls. They drive the very functions `OffloadTun` calls
//! (`warren_io::bench_support`), so they run as a normal user, without a tun device.
//!
//! * `split/tcp4_<n>x1360`: the receive path after its `read(2)`: a `virtio_net_hdr` and a
//!   TCPv4 super-packet of `n` segments of MSS 1360 (48: the 64 KiB one a fast stream
//!   reads; 16), cut into IP packets with their checksums filled in, at the 24-byte
//!   headroom the data channel seals into. Throughput: super-packet bytes.
//! * `coalesce/{verify,trust}/<shape>`: the send path up to its `writev(2)`: the GRO
//!   planner and the iovecs of every write, with the checksum check on (the default) and
//!   off (`OffloadTun::set_trust_checksums`). Shapes: `1flow_44x1400` (44 full 1400-byte
//!   TCP packets of one flow: one write), `4flows_64x1400` (64 packets of 4 interleaved
//!   flows: four writes), `acks_64` (64 pure ACKs, nothing to coalesce: 64 writes).
//!   Throughput: packet bytes.
//!
//! Run: `cargo bench -p warren-io --bench offload -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used)] // bench setup on fixed, valid inputs

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use warren_io::bench_support::{Coalescer, split};
use warren_io::{TUN_RECV_BATCH, VNET_HDR_LEN};

/// The room `DataKeys::seal` writes the P_DATA_V2 header into (warren-crypto
/// `DATA_HEADROOM`).
const HEADROOM: usize = 24;
const MTU: usize = 1500;
/// IPv4 (20) + TCP with the timestamps option (32).
const HDRS: usize = 52;

/// An IPv4/TCP packet with valid checksums: flow `sport`, flags ACK(|PSH).
fn tcp4(sport: u16, seq: u32, ack: u32, payload: usize, psh: bool) -> Vec<u8> {
    let total = HDRS + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 8, 0, 1]);
    p[16..20].copy_from_slice(&[10, 8, 0, 6]);
    let c = !tun_rs::checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 8 << 4; // 32-byte header
    t[13] = if psh { 0x18 } else { 0x10 };
    t[14..16].copy_from_slice(&512u16.to_be_bytes());
    t[20..22].copy_from_slice(&[1, 1]); // NOP NOP
    t[22..24].copy_from_slice(&[8, 10]); // timestamps
    t[24..28].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    for (i, b) in t[32..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ (seq as u8);
    }
    // Pseudo header: addresses, protocol, TCP length (RFC 793).
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&p[12..20]);
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    let c = !tun_rs::checksum(&p[20..], tun_rs::checksum_no_fold(&pseudo, 0));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// `n` consecutive full segments of one flow.
fn stream(sport: u16, n: usize, payload: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| tcp4(sport, 1000 + (i * payload) as u32, 77, payload, false))
        .collect()
}

/// Plans `packets` with the device path's coalescer and returns how many writes it made.
fn writes(c: &mut Coalescer, packets: &[Vec<u8>]) -> usize {
    c.send(packets, |iov| {
        black_box(iov);
        Ok(())
    })
    .unwrap()
    .writes
}

/// What a tun read of `n` coalesced segments returns: `virtio_net_hdr` + super-packet.
fn super_packet(n: usize, mss: usize) -> Vec<u8> {
    let mut raw = Vec::new();
    let sum = Coalescer::new(false)
        .send(&stream(40000, n, mss), |iov| {
            raw = iov.iter().flat_map(|s| s.iter().copied()).collect();
            Ok(())
        })
        .unwrap();
    assert_eq!(sum.writes, 1, "{n} segments fit one super-packet");
    raw
}

fn split_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("split");
    let mut bufs = vec![vec![0u8; HEADROOM + MTU]; TUN_RECV_BATCH];
    let mut sizes = vec![0usize; TUN_RECV_BATCH];
    for n in [48, 16] {
        let mut raw = super_packet(n, 1360);
        g.throughput(Throughput::Bytes((raw.len() - VNET_HDR_LEN) as u64));
        assert_eq!(split(&mut raw, &mut bufs, &mut sizes, HEADROOM).unwrap(), n);
        g.bench_function(format!("tcp4_{n}x1360"), |b| {
            // Splitting a GSO packet only reads `raw`: no per-iteration restore needed.
            b.iter(|| split(black_box(&mut raw), &mut bufs, &mut sizes, HEADROOM).unwrap())
        });
    }
    g.finish();
}

fn coalesce_bench(c: &mut Criterion) {
    let one_flow = stream(40000, 44, 1400 - HDRS);
    let flows: Vec<Vec<Vec<u8>>> = (0..4).map(|f| stream(40001 + f, 16, 1400 - HDRS)).collect();
    let four_flows: Vec<Vec<u8>> = (0..64).map(|i| flows[i % 4][i / 4].clone()).collect();
    let acks: Vec<Vec<u8>> = (0..64)
        .map(|i| tcp4(40000, 1, 1000 + i * 1448, 0, false))
        .collect();
    let shapes = [
        ("1flow_44x1400", &one_flow, 1),
        ("4flows_64x1400", &four_flows, 4),
        ("acks_64", &acks, 64),
    ];
    for (mode, trust) in [("verify", false), ("trust", true)] {
        let mut g = c.benchmark_group(format!("coalesce/{mode}"));
        let mut co = Coalescer::new(false);
        co.set_trust_checksums(trust);
        for (name, packets, want) in shapes {
            let bytes: usize = packets.iter().map(Vec::len).sum();
            g.throughput(Throughput::Bytes(bytes as u64));
            assert_eq!(writes(&mut co, packets), want, "{name}");
            g.bench_function(name, |b| b.iter(|| writes(&mut co, black_box(packets))));
        }
        g.finish();
    }
}

criterion_group!(benches, split_bench, coalesce_bench);
criterion_main!(benches);
