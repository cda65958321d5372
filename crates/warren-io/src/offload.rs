//! A layer-3 tun device with the kernel's segmentation offloads (`IFF_VNET_HDR` +
//! `TUNSETOFFLOAD`), read and written in batches.
//!
//! With offloads on, the kernel hands the tun up to 64 KiB "super-packets" (one TCP or UDP
//! flow, one IP/L4 header, a `virtio_net_hdr` in front saying how to cut it) and accepts the
//! same on write. That is what lets a userspace tunnel move a TCP stream with one syscall
//! per ~45 packets instead of one per packet (wireguard-go `tun/offload_linux.go`, the
//! model for this file).
//!
//! * Receive ([`OffloadTun::recv_batch`]): one `read(2)`, then the GSO split of tun-rs
//!   (`tun_rs::gso_split`, wireguard-go's `gsoSplit` ported) writes every segment as a
//!   complete IP packet (IPv4 header checksum and L4 checksum filled in) at `offset` in the
//!   caller's buffers, leaving `offset` bytes of headroom for the VPN header in front.
//! * Send ([`OffloadTun::send_batch`]): our own GRO. Consecutive TCP segments of one flow
//!   (and same-size UDP datagrams when the kernel accepted USO) are written as one GSO
//!   super-packet with `writev(2)`: a `virtio_net_hdr`, one patched copy of the first
//!   packet's IP+L4 header, then the payloads *where they lie* in the caller's buffers. No
//!   copy of packet data and no buffer growth, so the packets can sit anywhere, e.g. inside
//!   one UDP GRO receive buffer after being opened in place. (tun-rs's `send_multiple`
//!   appends into the first packet's buffer instead, which needs 64 KiB of capacity per
//!   buffer.) A packet's TCP/UDP checksum is verified before it is coalesced, unless the
//!   driver vouches for the batch ([`OffloadTun::set_trust_checksums`]: packets that just
//!   passed an AEAD open).
//! * Fallback: if the kernel refuses `TUNSETOFFLOAD`, or [`OffloadMode::Off`] is asked for,
//!   the device is plain `IFF_TUN | IFF_NO_PI` and both calls move one packet per syscall.
//!   A kernel that rejects a coalesced write with `EINVAL` (seen on some LTS kernels,
//!   tailscale issue 13041) turns coalescing off for this queue and the packets of that
//!   write go out one by one.
//!
//! Multi-queue (`IFF_MULTI_QUEUE`): [`OffloadTun::open_queue`] adds a descriptor; the kernel
//! spreads flows over all queues, so every queue needs a reader.
//!
//! Both directions are split into the system call and a pure function of the bytes
//! ([`split_read`], [`Coalescer::send`]); [`bench_support`] exposes the latter so that
//! `benches/offload.rs` measures the device path's own code without a device.
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use thiserror::Error;
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use crate::tun::{classify, kernel_name, nonblocking_name};
use crate::{TunConfig, TunError};

/// Size of `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h), in front of every
/// packet read or written on an `IFF_VNET_HDR` device.
pub const VNET_HDR_LEN: usize = 10;
/// The largest super-packet the kernel hands over or accepts (IP total length is 16 bits).
pub const MAX_SUPER_PACKET: usize = 65535;
/// Buffers to pass to [`OffloadTun::recv_batch`]: enough for a 64 KiB super-packet cut at
/// an MSS of 512 (tun-rs `IDEAL_BATCH_SIZE`, wireguard-go `IdealBatchSize`).
pub const TUN_RECV_BATCH: usize = 128;
/// At most this many packets go into one coalesced write (the kernel's GRO limit for UDP,
/// UDP_GRO_CNT_MAX; for TCP it also bounds the iovec count).
pub const MAX_COALESCE: usize = 64;

// include/uapi/linux/virtio_net.h
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_ACK: u8 = 0x10;
/// Offsets of the checksum field inside the TCP and UDP headers.
const TCP_CSUM_OFF: u16 = 16;
const UDP_CSUM_OFF: u16 = 6;
/// Room for one patched IP + L4 header (IPv6 40 + TCP with options 60).
const HDR_SLOT: usize = 128;

/// Whether to ask the kernel for offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadMode {
    /// Ask for CSUM|TSO4|TSO6 (+USO4|USO6); fall back to plain packets if refused.
    Auto,
    /// Plain `IFF_TUN | IFF_NO_PI`, one packet per read and write (the `--no-offload`
    /// switch, and what a tap device always uses).
    Off,
}

/// What the kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffloadState {
    /// `IFF_VNET_HDR` with TCP segmentation offload (TSO4/TSO6 + CSUM): reads may be TCP
    /// super-packets, writes may coalesce TCP.
    pub tcp: bool,
    /// UDP segmentation offload (USO4/USO6, Linux ≥ 6.2): UDP super-packets both ways.
    pub udp: bool,
}

impl OffloadState {
    /// Any offload on (the device then carries a `virtio_net_hdr` on every packet).
    pub fn enabled(self) -> bool {
        self.tcp
    }
}

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadTunConfig {
    pub tun: TunConfig,
    pub offload: OffloadMode,
    /// `IFF_MULTI_QUEUE`, so that [`OffloadTun::open_queue`] can add queues.
    pub multi_queue: bool,
}

/// Why a batch read produced no packets. Only [`TunBatchError::Io`] concerns the device;
/// the others cost one super-packet (count and drop; TCP retransmits).
#[derive(Debug, Error)]
pub enum TunBatchError {
    #[error("tun read: {0}")]
    Io(#[from] io::Error),
    #[error("malformed super-packet from the kernel: {0}")]
    Malformed(&'static str),
    #[error("super-packet of {segments} segments does not fit in {bufs} buffers")]
    TooManySegments { segments: usize, bufs: usize },
    #[error("a packet of {needed} bytes (with headroom) does not fit a {have}-byte buffer")]
    BufferTooSmall { needed: usize, have: usize },
}

/// What one [`OffloadTun::send_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendSummary {
    /// Packets handed to the kernel.
    pub packets: usize,
    /// `write(2)`/`writev(2)` calls made.
    pub writes: usize,
    /// Packets whose write failed (the kernel refused them; counted, dropped).
    pub dropped: usize,
}

/// A tun queue with offloads (when the kernel grants them), in non-blocking mode.
pub struct OffloadTun {
    dev: SyncDevice,
    name: String,
    mtu: u16,
    state: OffloadState,
    /// The raw read: `virtio_net_hdr` + super-packet.
    rx: Box<[u8]>,
    /// The send path with offloads on, up to the `writev(2)`.
    tx: Coalescer,
}

impl std::fmt::Debug for OffloadTun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadTun")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("offload", &self.state)
            .field("coalesce", &self.tx.coalesce)
            .field("trust_checksums", &self.tx.trust_checksums)
            .finish_non_exhaustive()
    }
}

impl OffloadTun {
    /// Creates, addresses and brings up the device. With [`OffloadMode::Auto`] a kernel
    /// that refuses `IFF_VNET_HDR`/`TUNSETOFFLOAD` gives a plain device instead of an error.
    pub fn open(cfg: &OffloadTunConfig) -> Result<OffloadTun, TunError> {
        let t = &cfg.tun;
        if t.prefix > 32 {
            return Err(TunError::BadPrefix(t.prefix));
        }
        let requested = kernel_name(&t.name)?;
        let build = |offload: bool| {
            let mut b = DeviceBuilder::new()
                .layer(Layer::L3)
                .offload(offload)
                .multi_queue(cfg.multi_queue)
                .packet_information(false)
                .mtu(t.mtu)
                .ipv4(t.address, t.prefix, None)
                .enable(true);
            if let Some(n) = &requested {
                b = b.name(n.clone());
            }
            b.build_sync()
        };
        let dev = match cfg.offload {
            OffloadMode::Off => build(false),
            OffloadMode::Auto => match build(true) {
                Ok(d) => Ok(d),
                // EPERM/EBUSY are not about offloads: report them as they are.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EBUSY)
                    ) =>
                {
                    Err(e)
                }
                Err(e) => {
                    tracing::info!(error = %e, "tun offloads refused; one packet per read/write");
                    build(false)
                }
            },
        };
        let shown = requested.unwrap_or_else(|| "tun%d".to_owned());
        let dev = dev.map_err(|source| classify(&shown, t, source))?;
        OffloadTun::wrap(dev, t.mtu)
    }

    fn wrap(dev: SyncDevice, mtu: u16) -> Result<OffloadTun, TunError> {
        let name = nonblocking_name(&dev)?;
        let state = OffloadState {
            tcp: dev.tcp_gso(),
            udp: dev.tcp_gso() && dev.udp_gso(),
        };
        Ok(OffloadTun {
            dev,
            name,
            mtu,
            state,
            rx: vec![0u8; VNET_HDR_LEN + MAX_SUPER_PACKET].into_boxed_slice(),
            tx: Coalescer {
                coalesce: state.tcp,
                ..Coalescer::new(state.udp)
            },
        })
    }

    /// Another queue of the same device (needs `multi_queue`), with the same offloads.
    /// The new queue starts with the defaults (coalescing on if offloads are, checksums
    /// verified), whatever was set on this one.
    pub fn open_queue(&self) -> Result<OffloadTun, TunError> {
        let dev = self.dev.try_clone().map_err(|source| TunError::Setup {
            step: "open another queue (IFF_MULTI_QUEUE)",
            source,
        })?;
        OffloadTun::wrap(dev, self.mtu)
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The offloads in force on this queue.
    pub fn offload(&self) -> OffloadState {
        self.state
    }

    /// Whether [`send_batch`](Self::send_batch) still coalesces (off without offloads and
    /// after the kernel refused a coalesced write).
    pub fn coalescing(&self) -> bool {
        self.tx.coalesce
    }

    /// Turns write coalescing off (or back on, if offloads are on).
    pub fn set_coalescing(&mut self, on: bool) {
        self.tx.coalesce = on && self.state.tcp;
    }

    /// Whether [`send_batch`](Self::send_batch) coalesces TCP segments and UDP datagrams
    /// without verifying their checksums first (off by default).
    pub fn trust_checksums(&self) -> bool {
        self.tx.trust_checksums
    }

    /// Skips the L4 checksum verification `send_batch` does before it coalesces a packet.
    /// Everything else about the coalescing rules stays the same.
    ///
    /// Why the check exists: the kernel takes a coalesced write as `CHECKSUM_PARTIAL` and
    /// computes the checksum of every segment itself, so a segment with a bad checksum
    /// merged into a super-packet would be delivered (or forwarded) with a fresh, valid
    /// checksum instead of being dropped. Verifying costs one pass over the payload
    /// (~6 % of the receiving side of a fast stream, docs/dataplane.md).
    ///
    /// Turn it on only for a queue that is written exclusively with packets that have just
    /// passed an authenticated open (AEAD or HMAC data channel): they cannot have been
    /// corrupted in transit. The trade-off: an authenticated peer that sends a packet with
    /// a bad checksum gets it recomputed and delivered rather than dropped by the kernel
    /// (it could as well send any other bad data; stock OpenVPN clients always send valid
    /// checksums, their tun hands them complete packets). A packet that ends up written
    /// alone is still checked by the kernel, and without offloads this changes nothing
    /// (every packet is written alone). Never turn it on when the data channel is
    /// unauthenticated (`--auth none` with a non-AEAD cipher, `--cipher none`).
    pub fn set_trust_checksums(&mut self, trust: bool) {
        self.tx.trust_checksums = trust;
    }

    /// Reads one super-packet (or one plain packet) and splits it into IP packets: packet
    /// `i` lands at `bufs[i][offset..offset + sizes[i]]`; returns how many. Each buffer
    /// needs `offset + mtu` bytes; pass [`TUN_RECV_BATCH`] buffers so that any super-packet
    /// fits. `WouldBlock` (as [`TunBatchError::Io`]) when nothing is queued.
    ///
    /// Without offloads this reads exactly one packet into `bufs[0]`.
    ///
    /// # Panics
    /// If `sizes` is shorter than `bufs` (a caller bug).
    pub fn recv_batch<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        sizes: &mut [usize],
        offset: usize,
    ) -> Result<usize, TunBatchError> {
        assert!(
            sizes.len() >= bufs.len(),
            "recv_batch needs one size slot per buffer"
        );
        let Some(first) = bufs.first_mut() else {
            return Ok(0);
        };
        if !self.state.tcp {
            let have = first.as_ref().len();
            let dst = first
                .as_mut()
                .get_mut(offset..)
                .ok_or(TunBatchError::BufferTooSmall {
                    needed: offset,
                    have,
                })?;
            sizes[0] = self.dev.recv(dst)?;
            return Ok(1);
        }
        let n = self.dev.recv(&mut self.rx)?;
        split_read(&mut self.rx[..n], bufs, sizes, offset)
    }

    /// Writes `packets` (each one whole IP packet), coalescing what can be coalesced when
    /// offloads are on. Packets of one flow keep their order. A packet the kernel refuses
    /// is counted in [`SendSummary::dropped`]; an error is returned only if the device
    /// itself failed (then nothing after it was written).
    pub fn send_batch<P: AsRef<[u8]>>(&mut self, packets: &[P]) -> io::Result<SendSummary> {
        let mut sum = SendSummary::default();
        if !self.state.tcp {
            for p in packets {
                sum.writes += 1;
                match self.dev.send(p.as_ref()) {
                    Ok(_) => sum.packets += 1,
                    Err(e) if is_fatal(&e) => return Err(e),
                    Err(_) => sum.dropped += 1,
                }
            }
            return Ok(sum);
        }
        let fd = self.dev.as_raw_fd();
        self.tx.send(packets, |iov| writev_all(fd, iov))
    }
}

impl AsFd for OffloadTun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }
}

/// Errors after which the descriptor is unusable.
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF) | Some(libc::EBADFD) | Some(libc::EIO) | Some(libc::ENODEV)
    )
}

/// `struct virtio_net_hdr`, in the device's native byte order (tun's default; no
/// TUNSETVNETLE/BE is issued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct VnetHdr {
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHdr {
    fn decode(b: &[u8]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// The receive path after its `read(2)`: `raw` is what the read returned (a
/// `virtio_net_hdr`, then the super-packet or plain packet), cut into `bufs` at `offset`.
///
/// # Panics
/// If `sizes` is shorter than `bufs` (a caller bug).
fn split_read<B: AsRef<[u8]> + AsMut<[u8]>>(
    raw: &mut [u8],
    bufs: &mut [B],
    sizes: &mut [usize],
    offset: usize,
) -> Result<usize, TunBatchError> {
    assert!(
        sizes.len() >= bufs.len(),
        "the split needs one size slot per buffer"
    );
    if raw.len() <= VNET_HDR_LEN {
        return Err(TunBatchError::Malformed(
            "read shorter than the virtio header",
        ));
    }
    let (hdr, pkt) = raw.split_at_mut(VNET_HDR_LEN);
    split_super_packet(VnetHdr::decode(hdr), pkt, bufs, sizes, offset)
}

/// Cuts one super-packet (`pkt`, described by `hdr`) into IP packets at `offset` in
/// `bufs`, completing the checksums the kernel left partial. The kernel is trusted no
/// further than this: every length is checked before tun-rs's split runs.
fn split_super_packet<B: AsRef<[u8]> + AsMut<[u8]>>(
    mut hdr: VnetHdr,
    pkt: &mut [u8],
    bufs: &mut [B],
    sizes: &mut [usize],
    offset: usize,
) -> Result<usize, TunBatchError> {
    let len = pkt.len();
    let gso_type = hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN;
    if gso_type == VIRTIO_NET_HDR_GSO_NONE {
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            complete_checksum(pkt, hdr.csum_start, hdr.csum_offset)?;
        }
        let Some(first) = bufs.first_mut() else {
            return Err(TunBatchError::TooManySegments {
                segments: 1,
                bufs: 0,
            });
        };
        let have = first.as_ref().len();
        let dst = first
            .as_mut()
            .get_mut(offset..offset.saturating_add(len))
            .ok_or(TunBatchError::BufferTooSmall {
                needed: offset.saturating_add(len),
                have,
            })?;
        dst.copy_from_slice(pkt);
        sizes[0] = len;
        return Ok(1);
    }
    let is_v6 = match pkt.first().map(|b| b >> 4) {
        Some(4) => false,
        Some(6) => true,
        _ => return Err(TunBatchError::Malformed("GSO packet is not IPv4 or IPv6")),
    };
    let (min_iph, proto) = match (gso_type, is_v6) {
        (VIRTIO_NET_HDR_GSO_TCPV4, false) => (20, IPPROTO_TCP),
        (VIRTIO_NET_HDR_GSO_TCPV6, true) => (40, IPPROTO_TCP),
        (VIRTIO_NET_HDR_GSO_UDP_L4, false) => (20, IPPROTO_UDP),
        (VIRTIO_NET_HDR_GSO_UDP_L4, true) => (40, IPPROTO_UDP),
        _ => {
            return Err(TunBatchError::Malformed(
                "GSO type does not match the IP version",
            ));
        }
    };
    if hdr.gso_size == 0 {
        return Err(TunBatchError::Malformed("GSO size 0"));
    }
    let csum_start = usize::from(hdr.csum_start);
    if csum_start < min_iph {
        return Err(TunBatchError::Malformed(
            "checksum start inside the IP header",
        ));
    }
    // Like wireguard-go, do not trust hdr_len (it can cover the whole first packet on the
    // forwarding path): recompute it from the transport header.
    let l4_len = if proto == IPPROTO_TCP {
        let doff = pkt
            .get(csum_start + 12)
            .ok_or(TunBatchError::Malformed("TCP header cut short"))?;
        let l = usize::from(doff >> 4) * 4;
        if !(20..=60).contains(&l) {
            return Err(TunBatchError::Malformed("bad TCP data offset"));
        }
        l
    } else {
        8
    };
    let hdr_len = csum_start + l4_len;
    if hdr_len > len {
        return Err(TunBatchError::Malformed("headers longer than the packet"));
    }
    hdr.hdr_len = u16::try_from(hdr_len).map_err(|_| TunBatchError::Malformed("hdr_len"))?;
    let gso = usize::from(hdr.gso_size);
    let payload = len - hdr_len;
    let segments = payload.div_ceil(gso);
    if segments > bufs.len() {
        return Err(TunBatchError::TooManySegments {
            segments,
            bufs: bufs.len(),
        });
    }
    let needed = offset + hdr_len + gso.min(payload);
    if let Some(small) = bufs[..segments]
        .iter()
        .map(|b| b.as_ref().len())
        .find(|&l| l < needed)
    {
        return Err(TunBatchError::BufferTooSmall {
            needed,
            have: small,
        });
    }
    let split_hdr = tun_rs::VirtioNetHdr {
        flags: hdr.flags,
        gso_type: hdr.gso_type,
        hdr_len: hdr.hdr_len,
        gso_size: hdr.gso_size,
        csum_start: hdr.csum_start,
        csum_offset: hdr.csum_offset,
    };
    tun_rs::gso_split(pkt, split_hdr, bufs, sizes, offset, is_v6)
        .map_err(|_| TunBatchError::Malformed("GSO split refused the packet"))
}

/// CHECKSUM_PARTIAL: the field at `start + off` holds the pseudo-header sum; the checksum
/// over `pkt[start..]` goes there (wireguard-go gsoNoneChecksum).
fn complete_checksum(pkt: &mut [u8], start: u16, off: u16) -> Result<(), TunBatchError> {
    let start = usize::from(start);
    let at = start + usize::from(off);
    if at + 2 > pkt.len() {
        return Err(TunBatchError::Malformed(
            "checksum field outside the packet",
        ));
    }
    let initial = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    pkt[at] = 0;
    pkt[at + 1] = 0;
    let sum = !tun_rs::checksum(&pkt[start..], u64::from(initial));
    pkt[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// GRO: grouping a batch of packets into coalesced writes.

/// What kind of write a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One packet written as it is (zero `virtio_net_hdr`).
    Plain,
    Tcp4,
    Tcp6,
    Udp4,
    Udp6,
}

/// One write: the packets `first`, `next[first]`, ..., `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    kind: Kind,
    first: u16,
    last: u16,
    count: u16,
    iph_len: u8,
    l4_len: u8,
    /// Payload size of the first packet; every later one but the last has the same.
    gso_size: u16,
    /// Sum of the payloads so far.
    payload: u32,
    /// TCP: the sequence number the next segment must carry.
    next_seq: u32,
    psh: bool,
    /// Nothing more may be appended (short last segment, PSH, limits).
    closed: bool,
    /// Slot in `Gro::headers` once the group has more than one packet.
    hdr_slot: u16,
}

impl Group {
    fn single(i: u16) -> Group {
        Group {
            kind: Kind::Plain,
            first: i,
            last: i,
            count: 1,
            iph_len: 0,
            l4_len: 0,
            gso_size: 0,
            payload: 0,
            next_seq: 0,
            psh: false,
            closed: true,
            hdr_slot: 0,
        }
    }
}

/// A parsed coalescing candidate.
#[derive(Debug, Clone, Copy)]
struct Cand {
    kind: Kind,
    iph_len: usize,
    l4_len: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

/// The switches of one [`Gro::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PlanOpts {
    /// Coalesce at all (off: every packet is its own plain write).
    coalesce: bool,
    /// Coalesce UDP too (the kernel accepted USO).
    udp: bool,
    /// Do not verify L4 checksums before coalescing ([`OffloadTun::set_trust_checksums`]).
    trust_checksums: bool,
}

/// Flow table buckets (a collision only loses a coalescing chance).
const BUCKETS: usize = 256;
const NO_GROUP: u16 = u16::MAX;

/// Reusable planning state (no allocation once warmed up to the batch size).
#[derive(Debug)]
struct Gro {
    groups: Vec<Group>,
    /// Packet index → next packet index in its group.
    next: Vec<u16>,
    /// Patched IP + L4 headers of the coalesced groups.
    headers: Vec<[u8; HDR_SLOT]>,
    vnet: Vec<[u8; VNET_HDR_LEN]>,
    table: [u16; BUCKETS],
}

impl Default for Gro {
    fn default() -> Gro {
        Gro {
            groups: Vec::with_capacity(TUN_RECV_BATCH),
            next: Vec::with_capacity(TUN_RECV_BATCH),
            headers: Vec::with_capacity(16),
            vnet: Vec::with_capacity(16),
            table: [NO_GROUP; BUCKETS],
        }
    }
}

impl Gro {
    /// Groups `packets` into writes (in the order of each write's first packet) and builds
    /// the header of every group of two or more.
    fn plan<P: AsRef<[u8]>>(&mut self, packets: &[P], opts: PlanOpts) {
        let coalesce = opts.coalesce;
        self.groups.clear();
        self.next.clear();
        self.table = [NO_GROUP; BUCKETS];
        let limit = packets.len().min(usize::from(u16::MAX - 1));
        for (i, p) in packets[..limit].iter().enumerate() {
            let pkt = p.as_ref();
            let idx = i as u16; // < u16::MAX by `limit`
            self.next.push(NO_GROUP);
            let cand = if coalesce {
                candidate(pkt, opts.udp, opts.trust_checksums)
            } else {
                None
            };
            let Some(c) = cand else {
                // A packet of a flow that is being coalesced (a FIN, a RST, a pure ACK...)
                // closes the flow's group, so nothing written after it overtakes it.
                if coalesce && let Some(b) = loose_bucket(pkt) {
                    let g = self.table[b];
                    if g != NO_GROUP {
                        self.groups[usize::from(g)].closed = true;
                    }
                }
                self.groups.push(Group::single(idx));
                continue;
            };
            let bucket = flow_hash(pkt, &c) % BUCKETS;
            let g = self.table[bucket];
            if g != NO_GROUP {
                let gi = usize::from(g);
                let group = self.groups[gi];
                let head = packets[usize::from(group.first)].as_ref();
                if can_append(&group, head, pkt, &c) {
                    self.next[usize::from(group.last)] = idx;
                    let group = &mut self.groups[gi];
                    group.last = idx;
                    group.count += 1;
                    group.payload += c.payload as u32;
                    group.next_seq = c.seq.wrapping_add(c.payload as u32);
                    let is_tcp = matches!(c.kind, Kind::Tcp4 | Kind::Tcp6);
                    group.psh |= is_tcp && c.flags & TCP_FLAG_PSH != 0;
                    if c.payload < usize::from(group.gso_size)
                        || group.psh
                        || usize::from(group.count) >= MAX_COALESCE
                    {
                        group.closed = true;
                    }
                    continue;
                }
            }
            let is_tcp = matches!(c.kind, Kind::Tcp4 | Kind::Tcp6);
            let psh = is_tcp && c.flags & TCP_FLAG_PSH != 0;
            self.groups.push(Group {
                kind: c.kind,
                first: idx,
                last: idx,
                count: 1,
                iph_len: c.iph_len as u8,   // ≤ 60
                l4_len: c.l4_len as u8,     // ≤ 60
                gso_size: c.payload as u16, // < 65536 (checked in candidate)
                payload: c.payload as u32,
                next_seq: c.seq.wrapping_add(c.payload as u32),
                psh,
                closed: psh,
                hdr_slot: 0,
            });
            self.table[bucket] = (self.groups.len() - 1) as u16; // ≤ limit
        }
        // Headers for the coalesced groups.
        let mut slot = 0usize;
        for gi in 0..self.groups.len() {
            let g = self.groups[gi];
            if g.count < 2 {
                continue;
            }
            if self.headers.len() <= slot {
                self.headers.push([0u8; HDR_SLOT]);
                self.vnet.push([0u8; VNET_HDR_LEN]);
            }
            let head = packets[usize::from(g.first)].as_ref();
            let (h, v) = build_header(&g, head);
            self.headers[slot] = h;
            self.vnet[slot] = v;
            self.groups[gi].hdr_slot = slot as u16; // ≤ groups
            slot += 1;
        }
    }
}

/// Parses `pkt` as a coalescing candidate: IPv4 without options and not fragmented, or
/// IPv6 without extension headers; TCP with only ACK (and PSH) set, or UDP (when `udp`)
/// with a checksum (IPv4 allows none); a non-empty payload; a valid L4 checksum (so that
/// the kernel, which will trust the checksum of the coalesced packet, sees what a
/// per-packet check would have seen), not verified when `trust_checksums`.
fn candidate(pkt: &[u8], udp: bool, trust_checksums: bool) -> Option<Cand> {
    let (v6, iph_len, proto, ip_len) = match pkt.first()? >> 4 {
        4 => {
            if pkt.len() < 20 || pkt[0] & 0x0f != 5 {
                return None;
            }
            // MF set or a fragment offset: not a whole datagram.
            if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
                return None;
            }
            (
                false,
                20,
                pkt[9],
                usize::from(u16::from_be_bytes([pkt[2], pkt[3]])),
            )
        }
        6 => {
            if pkt.len() < 40 {
                return None;
            }
            (
                true,
                40,
                pkt[6],
                40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]])),
            )
        }
        _ => return None,
    };
    if ip_len != pkt.len() {
        return None;
    }
    let (kind, l4_len, seq, flags) = match proto {
        IPPROTO_TCP => {
            let th = pkt.get(iph_len..iph_len + 20)?;
            let l4 = usize::from(th[12] >> 4) * 4;
            if l4 < 20 || pkt.len() < iph_len + l4 {
                return None;
            }
            let flags = th[13];
            if flags & !(TCP_FLAG_ACK | TCP_FLAG_PSH) != 0 || flags & TCP_FLAG_ACK == 0 {
                return None;
            }
            let seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]);
            (if v6 { Kind::Tcp6 } else { Kind::Tcp4 }, l4, seq, flags)
        }
        IPPROTO_UDP if udp => {
            let uh = pkt.get(iph_len..iph_len + 8)?;
            if usize::from(u16::from_be_bytes([uh[4], uh[5]])) != pkt.len() - iph_len {
                return None;
            }
            (if v6 { Kind::Udp6 } else { Kind::Udp4 }, 8, 0, 0)
        }
        _ => return None,
    };
    let payload = pkt.len() - iph_len - l4_len;
    if payload == 0 {
        return None;
    }
    // A UDPv4 datagram sent without a checksum stays as it was sent (a coalesced write
    // would come out of the kernel with one), trusted or not.
    if proto == IPPROTO_UDP && !v6 && pkt[iph_len + 6] == 0 && pkt[iph_len + 7] == 0 {
        return None;
    }
    if !trust_checksums && !l4_checksum_ok(pkt, v6, iph_len, proto) {
        return None;
    }
    Some(Cand {
        kind,
        iph_len,
        l4_len,
        payload,
        seq,
        flags,
    })
}

/// Sum of the pseudo header (RFC 793 / RFC 8200 §8.1) for an L4 length of `l4_len`.
fn pseudo_sum(pkt: &[u8], v6: bool, proto: u8, l4_len: usize) -> u64 {
    let addrs = if v6 { &pkt[8..40] } else { &pkt[12..20] };
    let mut s = tun_rs::checksum_no_fold(addrs, 0);
    s += u64::from(proto);
    s += l4_len as u64;
    s
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    s as u16
}

/// Whether the TCP/UDP checksum of `pkt` is right (UDPv4 "no checksum" is excluded by
/// the caller).
fn l4_checksum_ok(pkt: &[u8], v6: bool, iph_len: usize, proto: u8) -> bool {
    let l4 = &pkt[iph_len..];
    let initial = pseudo_sum(pkt, v6, proto, l4.len());
    tun_rs::checksum(l4, initial) == 0xffff
}

/// Flow key hash: addresses and ports.
fn flow_hash(pkt: &[u8], c: &Cand) -> usize {
    let v6 = matches!(c.kind, Kind::Tcp6 | Kind::Udp6);
    let addrs = if v6 { &pkt[8..40] } else { &pkt[12..20] };
    hash_flow(addrs, &pkt[c.iph_len..c.iph_len + 4])
}

/// The bucket of any TCP/UDP packet (options, flags and checksums not looked at).
fn loose_bucket(pkt: &[u8]) -> Option<usize> {
    let (addrs, iph, proto) = match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => (&pkt[12..20], usize::from(pkt[0] & 0x0f) * 4, pkt[9]),
        6 if pkt.len() >= 40 => (&pkt[8..40], 40, pkt[6]),
        _ => return None,
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let ports = pkt.get(iph..iph + 4)?;
    Some(hash_flow(addrs, ports) % BUCKETS)
}

fn hash_flow(addrs: &[u8], ports: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in addrs.iter().chain(ports) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 29)) as usize
}

/// Whether `pkt` continues `g` (whose first packet is `head`); the kernel's GRO rules as
/// wireguard-go applies them (tcpPacketsCanCoalesce, udpPacketsCanCoalesce).
fn can_append(g: &Group, head: &[u8], pkt: &[u8], c: &Cand) -> bool {
    if g.closed || g.kind != c.kind || usize::from(g.iph_len) != c.iph_len {
        return false;
    }
    let v6 = matches!(c.kind, Kind::Tcp6 | Kind::Udp6);
    // Same flow: addresses and ports.
    let (addrs, ip_same) = if v6 {
        // version/traffic class/flow label, and hop limit.
        (8..40, head[..4] == pkt[..4] && head[7] == pkt[7])
    } else {
        // TOS, flags (DF), TTL.
        (
            12..20,
            head[1] == pkt[1] && head[6] & 0xe0 == pkt[6] & 0xe0 && head[8] == pkt[8],
        )
    };
    let ih = c.iph_len;
    if !ip_same || head[addrs.clone()] != pkt[addrs] || head[ih..ih + 4] != pkt[ih..ih + 4] {
        return false;
    }
    if c.payload > usize::from(g.gso_size) {
        return false;
    }
    let total_l4 = usize::from(g.l4_len) + g.payload as usize + c.payload;
    let ip_total = c.iph_len + total_l4;
    if ip_total > MAX_SUPER_PACKET || (v6 && total_l4 > MAX_SUPER_PACKET) {
        return false;
    }
    match c.kind {
        Kind::Tcp4 | Kind::Tcp6 => {
            usize::from(g.l4_len) == c.l4_len
                && c.seq == g.next_seq
                // ack number, and the options (timestamps included) byte for byte.
                && head[ih + 8..ih + 12] == pkt[ih + 8..ih + 12]
                && head[ih + 20..ih + c.l4_len] == pkt[ih + 20..ih + c.l4_len]
        }
        Kind::Udp4 | Kind::Udp6 => true,
        Kind::Plain => false,
    }
}

/// The patched IP + L4 header and the `virtio_net_hdr` of a coalesced group.
fn build_header(g: &Group, head: &[u8]) -> ([u8; HDR_SLOT], [u8; VNET_HDR_LEN]) {
    let iph = usize::from(g.iph_len);
    let l4 = usize::from(g.l4_len);
    let hlen = iph + l4;
    let mut h = [0u8; HDR_SLOT];
    h[..hlen].copy_from_slice(&head[..hlen]);
    let l4_total = l4 + g.payload as usize;
    let (v6, proto, gso_type, csum_off) = match g.kind {
        Kind::Tcp4 => (false, IPPROTO_TCP, VIRTIO_NET_HDR_GSO_TCPV4, TCP_CSUM_OFF),
        Kind::Tcp6 => (true, IPPROTO_TCP, VIRTIO_NET_HDR_GSO_TCPV6, TCP_CSUM_OFF),
        Kind::Udp4 => (false, IPPROTO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4, UDP_CSUM_OFF),
        Kind::Udp6 => (true, IPPROTO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4, UDP_CSUM_OFF),
        Kind::Plain => unreachable!("plain packets are never coalesced"),
    };
    // The lengths were bounded by MAX_SUPER_PACKET in can_append.
    if v6 {
        h[4..6].copy_from_slice(&(l4_total as u16).to_be_bytes());
    } else {
        h[2..4].copy_from_slice(&((iph + l4_total) as u16).to_be_bytes());
        h[10] = 0;
        h[11] = 0;
        let c = !tun_rs::checksum(&h[..iph], 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let csum_at = iph + usize::from(csum_off);
    if proto == IPPROTO_TCP {
        if g.psh {
            h[iph + 13] |= TCP_FLAG_PSH;
        }
    } else {
        h[iph + 4..iph + 6].copy_from_slice(&(l4_total as u16).to_be_bytes());
    }
    // CHECKSUM_PARTIAL: the field holds the (uncomplemented) pseudo-header sum.
    let partial = fold(pseudo_sum(&h, v6, proto, l4_total));
    h[csum_at..csum_at + 2].copy_from_slice(&partial.to_be_bytes());
    let vnet = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: hlen as u16,
        gso_size: g.gso_size,
        csum_start: iph as u16,
        csum_offset: csum_off,
    };
    (h, vnet.encode())
}

const ZERO_VNET: [u8; VNET_HDR_LEN] = [0u8; VNET_HDR_LEN];

/// The send path of an offloaded queue up to the system call, shared by
/// [`OffloadTun::send_batch`] and the benches ([`bench_support`]): plans a batch into
/// writes and hands each write's iovecs (`virtio_net_hdr` first) to a writer.
#[derive(Debug)]
pub struct Coalescer {
    gro: Gro,
    /// Coalescing on write; turned off after a kernel refused a GSO write.
    coalesce: bool,
    /// The kernel accepted USO: UDP datagrams may be coalesced too.
    udp: bool,
    /// See [`OffloadTun::set_trust_checksums`].
    trust_checksums: bool,
}

impl Coalescer {
    /// Coalescing on, checksums verified; `udp` when the kernel accepted USO.
    pub fn new(udp: bool) -> Coalescer {
        Coalescer {
            gro: Gro::default(),
            coalesce: true,
            udp,
            trust_checksums: false,
        }
    }

    /// Whether coalescing is still on (a writer's `EINVAL` on a coalesced write turns it
    /// off).
    pub fn coalescing(&self) -> bool {
        self.coalesce
    }

    /// See [`OffloadTun::set_trust_checksums`].
    pub fn set_trust_checksums(&mut self, trust: bool) {
        self.trust_checksums = trust;
    }

    /// Plans `packets` into writes and calls `write` once per write with its iovecs: a
    /// `virtio_net_hdr`, then the packet (plain) or one patched IP + L4 header and every
    /// member's payload. What [`OffloadTun::send_batch`] does with offloads on, with
    /// `write` = `writev(2)`: a write failing with `EINVAL` turns coalescing off and its
    /// packets are written again one by one (tailscale issue 13041); an error that makes
    /// the descriptor unusable (`EBADF`, `EIO`, `ENODEV`) is returned; any other counts
    /// the write's packets as dropped.
    pub fn send<P, W>(&mut self, packets: &[P], mut write: W) -> io::Result<SendSummary>
    where
        P: AsRef<[u8]>,
        W: FnMut(&[IoSlice<'_>]) -> io::Result<()>,
    {
        let opts = PlanOpts {
            coalesce: self.coalesce,
            udp: self.udp,
            trust_checksums: self.trust_checksums,
        };
        self.gro.plan(packets, opts);
        let gro = &self.gro;
        let mut iov = Iov::new();
        let mut sum = SendSummary::default();
        for group in &gro.groups {
            fill_iov(&mut iov, gro, group, packets);
            sum.writes += 1;
            match write(iov.as_slice()) {
                Ok(()) => sum.packets += usize::from(group.count),
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) if group.count > 1 && e.raw_os_error() == Some(libc::EINVAL) => {
                    // This kernel does not take our GSO writes: stop coalescing and send
                    // the group's packets one by one (tailscale issue 13041).
                    tracing::warn!(error = %e, "tun refused a coalesced write; coalescing off");
                    self.coalesce = false;
                    let mut i = group.first;
                    loop {
                        fill_iov(&mut iov, gro, &Group::single(i), packets);
                        sum.writes += 1;
                        match write(iov.as_slice()) {
                            Ok(()) => sum.packets += 1,
                            Err(e) if is_fatal(&e) => return Err(e),
                            Err(_) => sum.dropped += 1,
                        }
                        if i == group.last {
                            break;
                        }
                        i = gro.next[usize::from(i)];
                    }
                }
                Err(_) => sum.dropped += usize::from(group.count),
            }
        }
        Ok(sum)
    }
}

/// The most iovecs one write has: `virtio_net_hdr`, header, [`MAX_COALESCE`] payloads.
const MAX_IOV: usize = MAX_COALESCE + 2;

/// The iovecs of one write, on the stack (no allocation per batch).
struct Iov<'a> {
    slots: [IoSlice<'a>; MAX_IOV],
    len: usize,
}

impl<'a> Iov<'a> {
    fn new() -> Iov<'a> {
        Iov {
            slots: [IoSlice::new(&[]); MAX_IOV],
            len: 0,
        }
    }

    fn push(&mut self, s: &'a [u8]) {
        assert!(
            self.len < MAX_IOV,
            "a write has at most MAX_COALESCE payloads (Gro::plan closes groups there)"
        );
        self.slots[self.len] = IoSlice::new(s);
        self.len += 1;
    }

    fn as_slice(&self) -> &[IoSlice<'a>] {
        &self.slots[..self.len]
    }
}

/// Fills `iov` for one group: `virtio_net_hdr`, then the packet (plain) or the patched
/// header followed by every member's payload.
fn fill_iov<'a, P: AsRef<[u8]>>(iov: &mut Iov<'a>, gro: &'a Gro, g: &Group, packets: &'a [P]) {
    iov.len = 0;
    if g.count < 2 {
        iov.push(&ZERO_VNET);
        iov.push(packets[usize::from(g.first)].as_ref());
        return;
    }
    let slot = usize::from(g.hdr_slot);
    let hlen = usize::from(g.iph_len) + usize::from(g.l4_len);
    iov.push(&gro.vnet[slot]);
    iov.push(&gro.headers[slot][..hlen]);
    let mut i = g.first;
    loop {
        iov.push(&packets[usize::from(i)].as_ref()[hlen..]);
        if i == g.last {
            break;
        }
        i = gro.next[usize::from(i)];
    }
}

/// One `writev(2)` of a whole write (a tun takes a write entirely or not at all).
fn writev_all(fd: libc::c_int, iov: &[IoSlice<'_>]) -> io::Result<()> {
    let count =
        libc::c_int::try_from(iov.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix (std
        // docs), and each one borrows a live slice for the duration of this call, which
        // writev only reads; `count` is the length of `iov` (≤ MAX_IOV, far below
        // IOV_MAX, from `Coalescer::send`); `fd` is the tun descriptor the caller owns.
        let n = unsafe { libc::writev(fd, iov.as_ptr().cast::<libc::iovec>(), count) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The offload code paths without a device, for `benches/offload.rs` (and a user's own
/// measurements). Not a stable API: these are the very functions the device path calls,
/// exposed so that a bench runs as a normal user, without root or a tun.
#[doc(hidden)]
pub mod bench_support {
    pub use super::Coalescer;
    use super::TunBatchError;

    /// [`OffloadTun::recv_batch`](super::OffloadTun::recv_batch) after its `read(2)`:
    /// `raw` holds a `virtio_net_hdr` (native byte order) and the super-packet; segment
    /// `i` lands at `bufs[i][offset..offset + sizes[i]]`. Returns how many. `raw` is only
    /// changed for a `GSO_NONE` packet with `NEEDS_CSUM` (its checksum is completed).
    ///
    /// # Panics
    /// If `sizes` is shorter than `bufs`.
    pub fn split<B: AsRef<[u8]> + AsMut<[u8]>>(
        raw: &mut [u8],
        bufs: &mut [B],
        sizes: &mut [usize],
        offset: usize,
    ) -> Result<usize, TunBatchError> {
        super::split_read(raw, bufs, sizes, offset)
    }
}

/// Gathers what one group would write, for tests: the `virtio_net_hdr` and the bytes.
#[cfg(test)]
fn materialize<P: AsRef<[u8]>>(gro: &Gro, g: &Group, packets: &[P]) -> (VnetHdr, Vec<u8>) {
    let mut iov = Iov::new();
    fill_iov(&mut iov, gro, g, packets);
    let out: Vec<u8> = iov
        .as_slice()
        .iter()
        .flat_map(|s| s.iter().copied())
        .collect();
    let hdr = VnetHdr::decode(&out[..VNET_HDR_LEN]);
    (hdr, out[VNET_HDR_LEN..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Today's default rules: checksums verified.
    fn verified(coalesce: bool, udp: bool) -> PlanOpts {
        PlanOpts {
            coalesce,
            udp,
            trust_checksums: false,
        }
    }

    fn trusted(coalesce: bool, udp: bool) -> PlanOpts {
        PlanOpts {
            trust_checksums: true,
            ..verified(coalesce, udp)
        }
    }

    /// An IPv4/TCP packet (ACK, timestamps option) with valid checksums.
    fn tcp4(seq: u32, payload: &[u8], flags: u8, ts: u32) -> Vec<u8> {
        tcp4_id(0, seq, payload, flags, ts)
    }

    /// The same with an IPv4 id (the GSO split numbers segments id, id+1, ...).
    fn tcp4_id(id: u16, seq: u32, payload: &[u8], flags: u8, ts: u32) -> Vec<u8> {
        let l4 = 32; // 20 + NOP NOP TS(10)
        let total = 20 + l4 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&[198, 18, 0, 1]);
        p[16..20].copy_from_slice(&[198, 18, 0, 2]);
        let c = !tun_rs::checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&77u32.to_be_bytes());
        t[12] = ((l4 / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&500u16.to_be_bytes());
        t[20..22].copy_from_slice(&[1, 1]);
        t[22] = 8;
        t[23] = 10;
        t[24..28].copy_from_slice(&ts.to_be_bytes());
        t[l4..].copy_from_slice(payload);
        let s = pseudo_sum(&p, false, IPPROTO_TCP, l4 + payload.len());
        let c = !tun_rs::checksum(&p[20..], s);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// An IPv6/UDP packet with a valid checksum.
    fn udp6(sport: u16, payload: &[u8]) -> Vec<u8> {
        let l4 = 8 + payload.len();
        let mut p = vec![0u8; 40 + l4];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(l4 as u16).to_be_bytes());
        p[6] = IPPROTO_UDP;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
        p[40..42].copy_from_slice(&sport.to_be_bytes());
        p[42..44].copy_from_slice(&443u16.to_be_bytes());
        p[44..46].copy_from_slice(&(l4 as u16).to_be_bytes());
        p[48..].copy_from_slice(payload);
        let s = pseudo_sum(&p, true, IPPROTO_UDP, l4);
        let c = !tun_rs::checksum(&p[40..], s);
        p[46..48].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn split_back(hdr: VnetHdr, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut pkt = bytes.to_vec();
        let mut bufs = vec![vec![0u8; 2000]; TUN_RECV_BATCH];
        let mut sizes = vec![0usize; TUN_RECV_BATCH];
        let n = split_super_packet(hdr, &mut pkt, &mut bufs, &mut sizes, 24).expect("split");
        (0..n)
            .map(|i| bufs[i][24..24 + sizes[i]].to_vec())
            .collect()
    }

    #[test]
    fn consecutive_tcp_segments_coalesce_and_split_back() {
        let mss = 1000;
        let pkts: Vec<Vec<u8>> = (0..5u32)
            .map(|i| {
                let len = if i == 4 { 300 } else { mss };
                let flags = if i == 4 {
                    TCP_FLAG_ACK | TCP_FLAG_PSH
                } else {
                    TCP_FLAG_ACK
                };
                tcp4_id(
                    i as u16,
                    1000 + i * mss as u32,
                    &vec![i as u8; len],
                    flags,
                    9,
                )
            })
            .collect();
        let mut gro = Gro::default();
        gro.plan(&pkts, verified(true, true));
        assert_eq!(gro.groups.len(), 1);
        let g = gro.groups[0];
        assert_eq!((g.count, g.gso_size, g.kind), (5, 1000, Kind::Tcp4));
        let (hdr, bytes) = materialize(&gro, &g, &pkts);
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(hdr.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!((hdr.csum_start, hdr.csum_offset, hdr.hdr_len), (20, 16, 52));
        assert_eq!(bytes.len(), 52 + 4300);
        // The split (what the kernel would do to it) gives back the original packets,
        // PSH only on the last one.
        let back = split_back(hdr, &bytes);
        assert_eq!(back.len(), 5);
        assert_eq!(back, pkts);
    }

    #[test]
    fn gaps_other_flags_bad_checksums_are_not_coalesced() {
        let a = tcp4(0, &[1; 100], TCP_FLAG_ACK, 1);
        let gap = tcp4(200, &[2; 100], TCP_FLAG_ACK, 1);
        let syn = tcp4(300, &[3; 100], TCP_FLAG_ACK | 0x02, 1);
        let other_ts = tcp4(100, &[4; 100], TCP_FLAG_ACK, 2);
        let mut bad = tcp4(100, &[5; 100], TCP_FLAG_ACK, 1);
        bad[60] ^= 1;
        let pure_ack = tcp4(100, &[], TCP_FLAG_ACK, 1);
        let pkts = [a, gap, syn, other_ts, bad, pure_ack];
        let mut gro = Gro::default();
        gro.plan(&pkts, verified(true, true));
        assert_eq!(gro.groups.len(), 6);
        assert!(gro.groups.iter().all(|g| g.count == 1));
        // With coalescing off everything is plain.
        gro.plan(&pkts, verified(false, true));
        assert!(gro.groups.iter().all(|g| g.kind == Kind::Plain));
    }

    #[test]
    fn udp_coalesces_only_with_uso_and_equal_sizes() {
        let pkts = [
            udp6(1, &[1; 1200]),
            udp6(1, &[2; 1200]),
            udp6(2, &[3; 1200]), // other flow, in between
            udp6(1, &[4; 1200]),
            udp6(1, &[5; 500]),
            udp6(1, &[6; 1200]), // after a short one: new group
        ];
        let mut gro = Gro::default();
        gro.plan(&pkts, verified(true, false));
        assert_eq!(gro.groups.len(), 6);
        gro.plan(&pkts, verified(true, true));
        let counts: Vec<u16> = gro.groups.iter().map(|g| g.count).collect();
        assert_eq!(counts, vec![4, 1, 1]);
        let g = gro.groups[0];
        let (hdr, bytes) = materialize(&gro, &g, &pkts);
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_UDP_L4);
        assert_eq!((hdr.gso_size, hdr.csum_offset), (1200, 6));
        let back = split_back(hdr, &bytes);
        let want = [&pkts[0], &pkts[1], &pkts[3], &pkts[4]];
        assert_eq!(back.len(), 4);
        for (b, w) in back.iter().zip(want) {
            assert_eq!(b, w);
        }
    }

    #[test]
    fn gso_none_with_partial_checksum_is_completed() {
        let mut p = udp6(9, b"hello");
        let good = p.clone();
        // What the kernel hands over for CHECKSUM_PARTIAL: the pseudo-header sum.
        let partial = fold(pseudo_sum(&p, true, IPPROTO_UDP, 13));
        p[46..48].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 40,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let mut bufs = [[0u8; 100]];
        let mut sizes = [0usize];
        assert_eq!(
            split_super_packet(hdr, &mut p, &mut bufs, &mut sizes, 4).expect("split"),
            1
        );
        assert_eq!(&bufs[0][4..4 + sizes[0]], &good[..]);
    }

    #[test]
    fn malformed_super_packets_are_typed_errors() {
        let pkt = tcp4(0, &[0; 3000], TCP_FLAG_ACK, 1);
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut bufs = vec![vec![0u8; 1100]; 8];
        let mut sizes = vec![0usize; 8];
        let cases: [(VnetHdr, &str); 4] = [
            (VnetHdr { gso_size: 0, ..hdr }, "gso 0"),
            (
                VnetHdr {
                    gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
                    ..hdr
                },
                "v6 type",
            ),
            (
                VnetHdr {
                    csum_start: 4,
                    ..hdr
                },
                "csum start",
            ),
            (VnetHdr { gso_type: 3, ..hdr }, "UFO"),
        ];
        for (h, what) in cases {
            let mut p = pkt.clone();
            assert!(
                matches!(
                    split_super_packet(h, &mut p, &mut bufs, &mut sizes, 24),
                    Err(TunBatchError::Malformed(_))
                ),
                "{what}"
            );
        }
        let mut p = pkt.clone();
        assert!(matches!(
            split_super_packet(hdr, &mut p, &mut bufs[..2], &mut sizes, 24),
            Err(TunBatchError::TooManySegments {
                segments: 3,
                bufs: 2
            })
        ));
        let mut small = vec![vec![0u8; 500]; 8];
        let mut p = pkt.clone();
        assert!(matches!(
            split_super_packet(hdr, &mut p, &mut small, &mut sizes, 24),
            Err(TunBatchError::BufferTooSmall { .. })
        ));
        let mut p = pkt;
        assert_eq!(
            split_super_packet(hdr, &mut p, &mut bufs, &mut sizes, 24).expect("valid"),
            3
        );
    }

    /// An IPv4/UDP packet; `checksum` false leaves the field 0 ("no checksum").
    fn udp4(sport: u16, payload: &[u8], checksum: bool) -> Vec<u8> {
        let l4 = 8 + payload.len();
        let total = 20 + l4;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = IPPROTO_UDP;
        p[12..16].copy_from_slice(&[198, 18, 0, 1]);
        p[16..20].copy_from_slice(&[198, 18, 0, 2]);
        let c = !tun_rs::checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&53u16.to_be_bytes());
        p[24..26].copy_from_slice(&(l4 as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        if checksum {
            let s = pseudo_sum(&p, false, IPPROTO_UDP, l4);
            let c = !tun_rs::checksum(&p[20..], s);
            p[26..28].copy_from_slice(&c.to_be_bytes());
        }
        p
    }

    /// Every write of a plan, as (virtio header, bytes).
    fn writes<P: AsRef<[u8]>>(gro: &Gro, pkts: &[P]) -> Vec<(VnetHdr, Vec<u8>)> {
        gro.groups
            .iter()
            .map(|g| materialize(gro, g, pkts))
            .collect()
    }

    /// Three full segments and a short PSH one of one flow.
    fn flow(mss: usize) -> Vec<Vec<u8>> {
        (0..4u32)
            .map(|i| {
                let (len, flags) = if i == 3 {
                    (mss / 3, TCP_FLAG_ACK | TCP_FLAG_PSH)
                } else {
                    (mss, TCP_FLAG_ACK)
                };
                let payload: Vec<u8> = (0..len).map(|b| (b as u8) ^ (i as u8)).collect();
                tcp4_id(i as u16, 7 + i * mss as u32, &payload, flags, 5)
            })
            .collect()
    }

    #[test]
    fn bad_checksum_segment_is_coalesced_only_when_trusted() {
        let mut pkts = flow(1000);
        pkts[1][20 + 32 + 10] ^= 0x40; // payload byte: the TCP checksum no longer matches
        let mut gro = Gro::default();
        // Verified (the default): the bad segment goes alone (the kernel drops it), and
        // it closes the group before it so nothing overtakes it; the next two coalesce.
        gro.plan(&pkts, verified(true, true));
        let shape: Vec<(Kind, u16)> = gro.groups.iter().map(|g| (g.kind, g.count)).collect();
        assert_eq!(
            shape,
            vec![(Kind::Tcp4, 1), (Kind::Plain, 1), (Kind::Tcp4, 2)]
        );
        assert_eq!(gro.groups[1].first, 1);
        // Trusted: one super-packet of all four.
        gro.plan(&pkts, trusted(true, true));
        assert_eq!(gro.groups.len(), 1);
        assert_eq!(gro.groups[0].count, 4);
        // The trade-off, spelled out: the kernel's segmentation recomputes the checksum,
        // so the corrupted segment comes out with a valid one.
        let (hdr, bytes) = materialize(&gro, &gro.groups[0], &pkts);
        let back = split_back(hdr, &bytes);
        assert_eq!(back.len(), 4);
        assert_ne!(back[1], pkts[1]);
        assert_eq!(back[1][20 + 32..], pkts[1][20 + 32..]);
        assert!(l4_checksum_ok(&back[1], false, 20, IPPROTO_TCP));
        assert!(!l4_checksum_ok(&pkts[1], false, 20, IPPROTO_TCP));
    }

    #[test]
    fn trusted_plan_equals_verified_plan_for_good_packets() {
        let mut pkts = flow(1200);
        pkts.extend(flow(700).into_iter().map(|mut p| {
            p[20] = 0x9c; // another source port: another flow
            p[36..38].copy_from_slice(&[0, 0]);
            let s = pseudo_sum(&p, false, IPPROTO_TCP, p.len() - 20);
            let c = !tun_rs::checksum(&p[20..], s);
            p[36..38].copy_from_slice(&c.to_be_bytes());
            p
        }));
        pkts.push(tcp4(1, &[], TCP_FLAG_ACK, 5)); // pure ACK
        pkts.extend((0..3u8).map(|i| udp6(4, &[i; 900])));
        pkts.push(udp6(4, &[9; 300]));
        pkts.extend((0..3u8).map(|i| udp4(5, &[i; 800], true)));
        let mut gro = Gro::default();
        for udp in [false, true] {
            gro.plan(&pkts, verified(true, udp));
            let groups = gro.groups.clone();
            let want = writes(&gro, &pkts);
            gro.plan(&pkts, trusted(true, udp));
            assert_eq!(gro.groups, groups, "udp {udp}");
            assert_eq!(writes(&gro, &pkts), want, "udp {udp}");
        }
        // Something was coalesced in every family, so the comparison covered the headers.
        let kinds: Vec<(Kind, u16)> = gro.groups.iter().map(|g| (g.kind, g.count)).collect();
        for k in [Kind::Tcp4, Kind::Udp6, Kind::Udp4] {
            assert!(kinds.iter().any(|&(kind, n)| kind == k && n > 1), "{k:?}");
        }
    }

    #[test]
    fn udp4_without_checksum_is_not_coalesced_even_when_trusted() {
        let pkts: Vec<Vec<u8>> = (0..4u8).map(|i| udp4(6, &[i; 500], false)).collect();
        let mut gro = Gro::default();
        for opts in [verified(true, true), trusted(true, true)] {
            gro.plan(&pkts, opts);
            assert!(gro.groups.iter().all(|g| g.kind == Kind::Plain), "{opts:?}");
        }
    }

    /// What the device path does, with a fake `writev`: the whole batch in two writes,
    /// then after an EINVAL on a coalesced write, one packet per write.
    #[test]
    fn coalescer_falls_back_to_single_writes_on_einval() {
        let pkts = flow(1000);
        let mut c = Coalescer::new(false);
        let mut seen = Vec::new();
        let sum = c
            .send(&pkts, |iov| {
                seen.push(iov.iter().map(|s| s.len()).sum::<usize>());
                Ok(())
            })
            .expect("send");
        assert_eq!(
            sum,
            SendSummary {
                packets: 4,
                writes: 1,
                dropped: 0
            }
        );
        assert_eq!(seen, vec![VNET_HDR_LEN + 52 + 3333]);
        let mut refused = 0;
        let sum = c
            .send(&pkts, |iov| {
                if iov.len() > 2 {
                    refused += 1;
                    Err(io::Error::from_raw_os_error(libc::EINVAL))
                } else {
                    Ok(())
                }
            })
            .expect("send");
        assert_eq!(refused, 1);
        assert!(!c.coalescing());
        assert_eq!(
            sum,
            SendSummary {
                packets: 4,
                writes: 5,
                dropped: 0
            }
        );
        // A dead descriptor is an error, not a drop.
        let err = c
            .send(&pkts, |_| Err(io::Error::from_raw_os_error(libc::EIO)))
            .expect_err("EIO");
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
    }

    /// The bench entry point is the receive path after the read: virtio header + packet.
    #[test]
    fn bench_split_reads_what_the_coalescer_writes() {
        let pkts = flow(1300);
        let mut c = Coalescer::new(false);
        let mut raw = Vec::new();
        c.send(&pkts, |iov| {
            raw = iov.iter().flat_map(|s| s.iter().copied()).collect();
            Ok(())
        })
        .expect("send");
        let mut bufs = vec![vec![0u8; 1500]; 8];
        let mut sizes = vec![0usize; 8];
        let n = bench_support::split(&mut raw, &mut bufs, &mut sizes, 24).expect("split");
        assert_eq!(n, 4);
        for i in 0..n {
            assert_eq!(bufs[i][24..24 + sizes[i]], pkts[i][..]);
        }
        let mut short = raw[..VNET_HDR_LEN].to_vec();
        assert!(matches!(
            bench_support::split(&mut short, &mut bufs, &mut sizes, 24),
            Err(TunBatchError::Malformed(_))
        ));
        let mut none: [Vec<u8>; 0] = [];
        let mut plain = [ZERO_VNET.to_vec(), pkts[0].clone()].concat();
        assert!(matches!(
            bench_support::split(&mut plain, &mut none, &mut sizes, 24),
            Err(TunBatchError::TooManySegments { .. })
        ));
    }

    proptest! {
        /// Whatever the kernel hands over, the split never panics.
        #[test]
        fn split_never_panics(
            flags in any::<u8>(), gso_type in any::<u8>(), gso_size in any::<u16>(),
            csum_start in 0u16..200, csum_offset in 0u16..40,
            mut pkt in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let hdr = VnetHdr { flags, gso_type, hdr_len: 0, gso_size, csum_start, csum_offset };
            let mut bufs = vec![vec![0u8; 1600]; 16];
            let mut sizes = vec![0usize; 16];
            let _ = split_super_packet(hdr, &mut pkt, &mut bufs, &mut sizes, 24);
        }

        /// split(coalesce(segments)) == segments, for any MSS, count and tail length.
        #[test]
        fn coalesce_then_split_round_trips(
            mss in 1usize..1400, n in 2usize..20, tail in 1usize..1400, seq in any::<u32>(),
        ) {
            let tail = tail.min(mss);
            let pkts: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let len = if i + 1 == n { tail } else { mss };
                    let s = seq.wrapping_add((i * mss) as u32);
                    tcp4_id(i as u16, s, &vec![(i * 7) as u8; len], TCP_FLAG_ACK, 3)
                })
                .collect();
            let total: usize = pkts.iter().map(|p| p.len() - 52).sum();
            prop_assume!(52 + total <= MAX_SUPER_PACKET);
            let mut gro = Gro::default();
            gro.plan(&pkts, verified(true, false));
            let mut back = Vec::new();
            for g in gro.groups.clone() {
                let (hdr, bytes) = materialize(&gro, &g, &pkts);
                if g.count == 1 {
                    back.push(bytes);
                } else {
                    back.extend(split_back(hdr, &bytes));
                }
            }
            prop_assert_eq!(back, pkts);
        }
    }
}
