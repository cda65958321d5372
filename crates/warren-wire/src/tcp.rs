//! TCP framing: each packet is prefixed by its length as a big-endian u16 (fact sheet §9;
//! OpenVPN socket.c:2648 stream_buf_added, :3407 link_socket_write_tcp).

use crate::WireError;

/// The largest packet a u16 prefix can describe.
pub const MAX_TCP_PACKET: usize = u16::MAX as usize;

/// Reassembles packets from a TCP byte stream.
///
/// A length of 0 or above the configured maximum is fatal for the connection in OpenVPN;
/// here it makes every later call return the same error, and the caller must close the
/// connection.
#[derive(Debug, Clone)]
pub struct TcpFramer {
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    start: usize,
    max_len: usize,
    failed: Option<WireError>,
}

impl Default for TcpFramer {
    fn default() -> Self {
        Self::new(MAX_TCP_PACKET)
    }
}

impl TcpFramer {
    /// A framer that rejects packets longer than `max_len` (capped at 65535).
    pub fn new(max_len: usize) -> Self {
        TcpFramer {
            buf: Vec::new(),
            start: 0,
            max_len: max_len.min(MAX_TCP_PACKET),
            failed: None,
        }
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= 4096 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete packet, borrowed from the internal buffer (no allocation); `Ok(None)`
    /// until one has fully arrived.
    pub fn next_packet_ref(&mut self) -> Result<Option<&[u8]>, WireError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let avail = &self.buf[self.start..];
        let Some(hdr) = avail.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
        if len == 0 || len > self.max_len {
            let e = WireError::BadTcpLength(len);
            self.failed = Some(e);
            self.buf = Vec::new();
            self.start = 0;
            return Err(e);
        }
        if avail.len() < 2 + len {
            return Ok(None);
        }
        let from = self.start + 2;
        self.start = from + len;
        Ok(Some(&self.buf[from..from + len]))
    }

    /// Like [`Self::next_packet_ref`], but returns an owned copy.
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        self.next_packet_ref().map(|p| p.map(<[u8]>::to_vec))
    }

    /// Bytes received but not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Appends `packet` with its u16 length prefix. Fails for an empty packet or one longer
/// than 65535 bytes (the peer would drop the connection).
pub fn encode_tcp_frame(packet: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    let len = u16::try_from(packet.len())
        .ok()
        .filter(|&l| l > 0)
        .ok_or(WireError::PacketTooLong(packet.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic() {
        let mut f = TcpFramer::new(1600);
        f.push(&[0, 3, 1, 2]);
        assert_eq!(f.next_packet(), Ok(None));
        f.push(&[3, 0, 1, 9, 0]);
        assert_eq!(f.next_packet(), Ok(Some(vec![1, 2, 3])));
        assert_eq!(f.next_packet(), Ok(Some(vec![9])));
        assert_eq!(f.next_packet(), Ok(None));
        assert_eq!(f.buffered(), 1);
        f.push(&[0]);
        assert_eq!(f.next_packet(), Err(WireError::BadTcpLength(0)));
        f.push(&[0, 1, 5]);
        assert_eq!(f.next_packet(), Err(WireError::BadTcpLength(0)), "sticky");

        let mut f = TcpFramer::new(1600);
        f.push(&1601u16.to_be_bytes());
        assert_eq!(f.next_packet(), Err(WireError::BadTcpLength(1601)));

        let mut out = Vec::new();
        encode_tcp_frame(&[7; 14], &mut out).expect("frame");
        assert_eq!(&out[..2], &[0, 14]);
        assert_eq!(
            encode_tcp_frame(&[], &mut out),
            Err(WireError::PacketTooLong(0))
        );
        assert_eq!(
            encode_tcp_frame(&vec![0; 65536], &mut out),
            Err(WireError::PacketTooLong(65536))
        );
        assert_eq!(out.len(), 16);
    }

    proptest! {
        #[test]
        fn round_trip(
            packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..20),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut stream = Vec::new();
            for p in &packets {
                encode_tcp_frame(p, &mut stream).expect("frame");
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.extend([0, stream.len()]);
            points.sort_unstable();
            let mut f = TcpFramer::new(300);
            let mut got = Vec::new();
            for w in points.windows(2) {
                f.push(&stream[w[0]..w[1]]);
                while let Some(p) = f.next_packet().expect("valid") {
                    got.push(p);
                }
            }
            prop_assert_eq!(got, packets);
            prop_assert_eq!(f.buffered(), 0);
        }

        #[test]
        fn never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 0..10)) {
            let mut f = TcpFramer::new(40);
            for c in &chunks {
                f.push(c);
                while let Ok(Some(_)) = f.next_packet_ref() {}
            }
        }
    }
}
