//! TCP framing ([`TcpFramer`], [`FrameBuf`]): each packet is prefixed by its length as a big-endian u16 (fact sheet §9;
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

/// A TCP receive buffer that hands out complete frames as ranges of its own storage, so
/// the caller can authenticate and decrypt them in place (no copy, no allocation after
/// creation), and many frames of one read in one batch.
///
/// Use: [`FrameBuf::spare`] (read the socket into it), [`FrameBuf::commit`], then
/// [`FrameBuf::next_frame`] until `Ok(None)`; the ranges index [`FrameBuf::bytes_mut`] and
/// stay valid until the next [`FrameBuf::spare`], which moves a partial frame to the front.
/// A length of 0 or above the maximum is fatal, as in OpenVPN (socket.c
/// stream_buf_added: "TCP/UDP packet too large", the connection is restarted).
#[derive(Debug, Clone)]
pub struct FrameBuf {
    buf: Box<[u8]>,
    /// Start of the first byte not yet returned in a frame.
    start: usize,
    /// End of the bytes read.
    end: usize,
    max_len: usize,
    failed: Option<WireError>,
}

impl FrameBuf {
    /// A buffer of `capacity` bytes (at least one largest frame and its prefix) that
    /// rejects frames longer than `max_len` (capped at 65535).
    pub fn new(capacity: usize, max_len: usize) -> FrameBuf {
        let max_len = max_len.clamp(1, MAX_TCP_PACKET);
        FrameBuf {
            buf: vec![0; capacity.max(2 + max_len)].into_boxed_slice(),
            start: 0,
            end: 0,
            max_len,
            failed: None,
        }
    }

    /// Free room to read into, after moving the unread bytes to the front. Invalidates
    /// the ranges returned so far.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`FrameBuf::spare`].
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete frame's packet, as a range of [`FrameBuf::bytes_mut`]; `Ok(None)`
    /// until one has fully arrived. An error is sticky: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<std::ops::Range<usize>>, WireError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let avail = &self.buf[self.start..self.end];
        let Some(hdr) = avail.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
        if len == 0 || len > self.max_len {
            let e = WireError::BadTcpLength(len);
            self.failed = Some(e);
            return Err(e);
        }
        if avail.len() < 2 + len {
            return Ok(None);
        }
        let from = self.start + 2;
        self.start = from + len;
        Ok(Some(from..from + len))
    }

    /// The storage the frame ranges point into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The storage, read-only (for writing opened packets out of it).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes read but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
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

    /// Reads `chunk` into the buffer the way a socket read would.
    fn feed(f: &mut FrameBuf, chunk: &[u8]) {
        let spare = f.spare();
        spare[..chunk.len()].copy_from_slice(chunk);
        f.commit(chunk.len());
    }

    fn drain(f: &mut FrameBuf) -> Result<Vec<Vec<u8>>, WireError> {
        let mut got = Vec::new();
        while let Some(r) = f.next_frame()? {
            got.push(f.bytes_mut()[r].to_vec());
        }
        Ok(got)
    }

    #[test]
    fn frame_buf_partial_reads_and_several_frames_per_read() {
        let mut f = FrameBuf::new(64, 40);
        // Half a length prefix, then the rest of the frame and two more in one read.
        feed(&mut f, &[0]);
        assert_eq!(drain(&mut f), Ok(vec![]));
        feed(&mut f, &[3, 1, 2]);
        assert_eq!(drain(&mut f), Ok(vec![]), "frame incomplete");
        feed(&mut f, &[3, 0, 1, 9, 0, 2, 7, 7, 0]);
        assert_eq!(drain(&mut f), Ok(vec![vec![1, 2, 3], vec![9], vec![7, 7]]));
        assert_eq!(f.buffered(), 1);
        // Opened in place: the range is writable and points into the buffer.
        feed(&mut f, &[2, 0xaa, 0xbb]);
        let r = f.next_frame().expect("ok").expect("frame");
        f.bytes_mut()[r.clone()].copy_from_slice(&[1, 1]);
        assert_eq!(&f.bytes()[r], &[1, 1]);
        assert_eq!(f.buffered(), 0);
        // A frame that fills the whole buffer after compaction.
        for _ in 0..3 {
            feed(&mut f, &[0, 40]);
            feed(&mut f, &[5; 40]);
            assert_eq!(drain(&mut f), Ok(vec![vec![5; 40]]));
        }
    }

    #[test]
    fn frame_buf_refuses_bad_lengths() {
        let mut f = FrameBuf::new(64, 40);
        feed(&mut f, &[0, 41, 1]);
        assert_eq!(f.next_frame(), Err(WireError::BadTcpLength(41)));
        assert_eq!(f.next_frame(), Err(WireError::BadTcpLength(41)), "sticky");
        let mut f = FrameBuf::new(64, 40);
        feed(&mut f, &[0, 1, 8, 0, 0]);
        assert_eq!(f.next_frame().map(|r| r.map(|r| r.len())), Ok(Some(1)));
        assert_eq!(f.next_frame(), Err(WireError::BadTcpLength(0)));
        // The largest u16 is refused by a buffer sized for less.
        let mut f = FrameBuf::new(0, 1600);
        feed(&mut f, &[0xff, 0xff]);
        assert_eq!(f.next_frame(), Err(WireError::BadTcpLength(65535)));
    }

    proptest! {
        #[test]
        fn frame_buf_round_trip(
            packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..20),
            cuts in prop::collection::vec(1usize..400, 0..40),
        ) {
            let mut stream = Vec::new();
            for p in &packets {
                encode_tcp_frame(p, &mut stream).expect("frame");
            }
            let mut f = FrameBuf::new(302, 300);
            let mut got = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < stream.len() {
                let room = f.spare().len();
                let want = cut.next().copied().unwrap_or(room).min(room).min(stream.len() - at);
                feed(&mut f, &stream[at..at + want]);
                at += want;
                got.extend(drain(&mut f).expect("valid"));
            }
            prop_assert_eq!(got, packets);
            prop_assert_eq!(f.buffered(), 0);
        }

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
