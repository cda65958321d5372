//! Control messages: NUL-terminated strings in the TLS plaintext stream after key method 2
//! (fact sheet §8; OpenVPN ssl_pkt.c:563 extract_command_buffer, forward.c:283
//! check_incoming_control_channel, push.c:715-830 send_push_options / send_push_reply).

use crate::WireError;

/// Default bound on an unterminated message held by [`ControlMessageReader`]. OpenVPN never
/// sends more than 2047 bytes per message (one TLS read of TLS_CHANNEL_BUF_SIZE).
pub const DEFAULT_MAX_CONTROL_MESSAGE: usize = 64 * 1024;

/// Largest message (NUL included) OpenVPN reads in one piece: TLS_CHANNEL_BUF_SIZE
/// (common.h:69). Keep every message sent at or below it.
pub const TLS_CHANNEL_BUF_SIZE: usize = 2048;

/// Splits the TLS plaintext stream into control messages.
///
/// OpenVPN relies on one TLS record per message; a rustls reader merges records, so this
/// reader splits on NUL instead and keeps an unterminated tail for the next [`push`].
/// Like OpenVPN (ssl_pkt.c extract_command_buffer) it strips trailing `\r`/`\n` and drops a
/// message holding a byte below 0x20 or 0x7F (bytes ≥ 0x80 are allowed; invalid UTF-8 is
/// replaced by U+FFFD). An unterminated tail longer than the limit is discarded up to the
/// next NUL.
///
/// [`push`]: ControlMessageReader::push
#[derive(Debug, Clone)]
pub struct ControlMessageReader {
    buf: Vec<u8>,
    /// Bytes before this offset have been scanned and hold no NUL.
    scanned: usize,
    limit: usize,
    discarding: bool,
    dropped: u64,
}

impl Default for ControlMessageReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlMessageReader {
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_CONTROL_MESSAGE)
    }

    /// A reader that holds at most `limit` bytes of an unterminated message.
    pub fn with_limit(limit: usize) -> Self {
        ControlMessageReader {
            buf: Vec::new(),
            scanned: 0,
            limit: limit.max(1),
            discarding: false,
            dropped: 0,
        }
    }

    /// Appends plaintext from the TLS stream.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.discarding {
            match bytes.iter().position(|&b| b == 0) {
                None => return,
                Some(i) => {
                    bytes = &bytes[i + 1..];
                    self.discarding = false;
                }
            }
        }
        self.buf.extend_from_slice(bytes);
        // Bound the tail after the last NUL.
        let tail_start = self.buf.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
        if self.buf.len() - tail_start > self.limit {
            self.buf.truncate(tail_start);
            self.scanned = self.scanned.min(tail_start);
            self.discarding = true;
            self.dropped += 1;
        }
    }

    /// The next complete, acceptable message, without its NUL and trailing CR/LF.
    pub fn next_message(&mut self) -> Option<String> {
        loop {
            let Some(off) = self.buf[self.scanned..].iter().position(|&b| b == 0) else {
                self.scanned = self.buf.len();
                return None;
            };
            let nul = self.scanned + off;
            let mut msg: Vec<u8> = self.buf.drain(..=nul).collect();
            self.scanned = 0;
            msg.pop(); // the NUL
            // buffer.c buf_chomp.
            while matches!(msg.last(), Some(b'\r' | b'\n')) {
                msg.pop();
            }
            if msg.is_empty() {
                continue;
            }
            // string_check_buf(CC_PRINT | CC_NULL, CC_CRLF); buffer.c char_class takes an
            // unsigned char and CC_PRINT is `c >= 32 && c != 127`.
            if msg.iter().any(|&b| b < 0x20 || b == 0x7F) {
                self.dropped += 1;
                continue;
            }
            return Some(match String::from_utf8(msg) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            });
        }
    }

    /// Bytes held (an incomplete message and messages not yet taken).
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Messages dropped so far for bad characters or for exceeding the limit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Appends `msg` and its NUL. The message must not contain NUL, CR or LF (the peer would cut
/// or drop it) and should stay below [`TLS_CHANNEL_BUF_SIZE`] with its NUL; send it as one
/// TLS record.
pub fn encode_control_message(msg: &str, out: &mut Vec<u8>) {
    debug_assert!(
        !msg.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')),
        "control message with NUL/CR/LF"
    );
    out.extend_from_slice(msg.as_bytes());
    out.push(0);
}

/// PUSH_BUNDLE_SIZE (common.h:88): the buffer the stock server builds each PUSH_REPLY in.
pub const PUSH_BUNDLE_SIZE: usize = 1024;

/// push.c send_push_reply: room kept free in each bundle "for possible trailing ifconfig and
/// push-continuation".
const PUSH_EXTRA: usize = 84;
const PUSH_REPLY: &str = "PUSH_REPLY";

/// Checks one push option: non-empty, no comma (push.c push_option_ex), only characters the
/// control channel carries, and short enough to fit in a bundle.
pub fn validate_push_option(opt: &str) -> Result<(), WireError> {
    if opt.is_empty() || opt.bytes().any(|b| b == b',' || b < 0x20 || b == 0x7F) {
        return Err(WireError::BadPushOption);
    }
    if PUSH_REPLY.len() + opt.len() >= PUSH_BUNDLE_SIZE - PUSH_EXTRA {
        return Err(WireError::PushOptionTooLong(opt.len()));
    }
    Ok(())
}

/// Builds the PUSH_REPLY messages for `options` the way the stock server does (push.c
/// send_push_options): options are appended as `,opt` while
/// `len + opt.len() < PUSH_BUNDLE_SIZE - 84`; when the next one would not fit, the message
/// gets `,push-continuation 2` and a new one starts. When split, the last message ends with
/// `,push-continuation 1`. No options give a lone `PUSH_REPLY`.
///
/// Fails on the first option [`validate_push_option`] rejects.
pub fn try_build_push_replies(options: &[String]) -> Result<Vec<String>, WireError> {
    let safe_cap = PUSH_BUNDLE_SIZE - PUSH_EXTRA;
    let mut out = Vec::new();
    let mut cur = String::from(PUSH_REPLY);
    for opt in options {
        validate_push_option(opt)?;
        if cur.len() + opt.len() >= safe_cap {
            cur.push_str(",push-continuation 2");
            out.push(std::mem::replace(&mut cur, String::from(PUSH_REPLY)));
        }
        cur.push(',');
        cur.push_str(opt);
    }
    if !out.is_empty() {
        cur.push_str(",push-continuation 1");
    }
    out.push(cur);
    Ok(out)
}

/// [`try_build_push_replies`] that skips the options it would reject (the stock server
/// refuses them at configuration time). Validate configured options with
/// [`validate_push_option`] to report them.
pub fn build_push_replies(options: &[String]) -> Vec<String> {
    let valid: Vec<String> = options
        .iter()
        .filter(|o| validate_push_option(o).is_ok())
        .cloned()
        .collect();
    // Cannot fail: every option is valid.
    try_build_push_replies(&valid).unwrap_or_else(|_| vec![PUSH_REPLY.to_owned()])
}

/// A parsed PUSH_REPLY message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushReply {
    /// The options, in order, without `push-continuation`. Empty items are skipped.
    pub options: Vec<String>,
    /// The value of `push-continuation N` if present: 2 = more messages follow, 1 = last.
    pub continuation: Option<u8>,
}

impl PushReply {
    /// True when more PUSH_REPLY messages follow this one.
    pub fn more_follows(&self) -> bool {
        self.continuation == Some(2)
    }
}

/// Parses `PUSH_REPLY[,opt...]`; `None` for any other message.
pub fn parse_push_reply(msg: &str) -> Option<PushReply> {
    let rest = msg.strip_prefix(PUSH_REPLY)?;
    let rest = match rest {
        "" => return Some(PushReply::default()),
        r => r.strip_prefix(',')?,
    };
    let mut reply = PushReply::default();
    for opt in rest.split(',') {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        if let Some(v) = opt.strip_prefix("push-continuation")
            && v.starts_with([' ', '\t'])
            && let Ok(n) = v.trim().parse::<u8>()
        {
            reply.continuation = Some(n);
            continue;
        }
        reply.options.push(opt.to_owned());
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(r: &mut ControlMessageReader) -> Vec<String> {
        std::iter::from_fn(|| r.next_message()).collect()
    }

    #[test]
    fn splits_on_nul_across_pushes() {
        let mut r = ControlMessageReader::new();
        r.push(b"PUSH_REQ");
        assert_eq!(r.next_message(), None);
        r.push(b"UEST\0AUTH_FAILED,bad\r\n\0\0\0INFO,x");
        assert_eq!(all(&mut r), ["PUSH_REQUEST", "AUTH_FAILED,bad"]);
        r.push(b"\0");
        assert_eq!(all(&mut r), ["INFO,x"]);
        assert_eq!(r.pending_len(), 0);
        assert_eq!(r.dropped(), 0);
    }

    #[test]
    fn drops_control_characters_keeps_utf8() {
        let mut r = ControlMessageReader::new();
        r.push(b"bad\x01msg\0in\nside\0del\x7f\0INFO,caf\xc3\xa9\0INFO,\xff\0");
        assert_eq!(all(&mut r), ["INFO,café", "INFO,\u{fffd}"]);
        assert_eq!(r.dropped(), 3);
    }

    #[test]
    fn bounded_tail() {
        let mut r = ControlMessageReader::with_limit(8);
        r.push(b"OK\x00123456");
        r.push(b"789");
        assert_eq!(r.dropped(), 1);
        r.push(b"still garbage");
        r.push(b"end\0HALT\0");
        assert_eq!(all(&mut r), ["OK", "HALT"]);
        assert!(r.pending_len() == 0);
    }

    #[test]
    fn encode() {
        let mut out = Vec::new();
        encode_control_message("PUSH_REQUEST", &mut out);
        assert_eq!(out, b"PUSH_REQUEST\0");
    }

    #[test]
    fn push_reply_small() {
        let opts: Vec<String> = ["route-gateway 10.199.0.1", "topology subnet", "ping 10"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = build_push_replies(&opts);
        assert_eq!(
            r,
            ["PUSH_REPLY,route-gateway 10.199.0.1,topology subnet,ping 10"]
        );
        let p = parse_push_reply(&r[0]).expect("push reply");
        assert_eq!(p.options, opts);
        assert_eq!(p.continuation, None);
        assert_eq!(build_push_replies(&[]), ["PUSH_REPLY"]);
        assert_eq!(parse_push_reply("PUSH_REPLY"), Some(PushReply::default()));
        assert_eq!(parse_push_reply("PUSH_REQUEST"), None);
        assert_eq!(parse_push_reply("PUSH_REPLYX"), None);
    }

    #[test]
    fn push_reply_split() {
        let opts: Vec<String> = (0..60)
            .map(|i| format!("route 10.{i}.0.0 255.255.0.0"))
            .collect();
        let total: usize = opts.iter().map(|o| o.len() + 1).sum();
        assert!(total > PUSH_BUNDLE_SIZE);
        let msgs = build_push_replies(&opts);
        assert!(msgs.len() >= 2);
        let mut got = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            // Each message fits the stock bundle, NUL included.
            assert!(m.len() < PUSH_BUNDLE_SIZE, "{} bytes", m.len());
            let last = i + 1 == msgs.len();
            assert!(m.ends_with(if last {
                ",push-continuation 1"
            } else {
                ",push-continuation 2"
            }));
            let p = parse_push_reply(m).expect("parse");
            assert_eq!(p.more_follows(), !last);
            got.extend(p.options);
        }
        assert_eq!(got, opts);
        // The stock rule: an option starts a new message when len + opt >= 940.
        for m in &msgs[..msgs.len() - 1] {
            let body = m.trim_end_matches(",push-continuation 2");
            let next = &opts[got_index(&opts, body)];
            assert!(body.len() + next.len() >= PUSH_BUNDLE_SIZE - 84);
        }
    }

    fn got_index(opts: &[String], body: &str) -> usize {
        let last = body.rsplit(',').next().unwrap_or("");
        opts.iter().position(|o| o == last).map_or(0, |i| i + 1)
    }

    #[test]
    fn push_option_rules() {
        assert_eq!(validate_push_option("a,b"), Err(WireError::BadPushOption));
        assert_eq!(validate_push_option(""), Err(WireError::BadPushOption));
        assert_eq!(validate_push_option("x\ny"), Err(WireError::BadPushOption));
        let long = "x".repeat(930);
        assert_eq!(
            validate_push_option(&long),
            Err(WireError::PushOptionTooLong(930))
        );
        assert!(validate_push_option(&"x".repeat(929)).is_ok());
        let opts = vec!["ping 10".to_owned(), "a,b".to_owned(), long];
        assert_eq!(try_build_push_replies(&opts), Err(WireError::BadPushOption));
        assert_eq!(build_push_replies(&opts), ["PUSH_REPLY,ping 10"]);
    }

    #[test]
    fn push_continuation_parse() {
        let p = parse_push_reply("PUSH_REPLY,ping 10,,push-continuation 2").expect("p");
        assert_eq!(p.options, ["ping 10"]);
        assert_eq!(p.continuation, Some(2));
        let p = parse_push_reply("PUSH_REPLY,push-continuationX,push-continuation x").expect("p");
        assert_eq!(p.options, ["push-continuationX", "push-continuation x"]);
        assert_eq!(p.continuation, None);
    }

    fn arb_opt() -> impl Strategy<Value = String> {
        prop::string::string_regex("[a-z][a-z0-9. -]{0,80}[a-z0-9]").expect("re")
    }

    proptest! {
        #[test]
        fn push_round_trip(opts in prop::collection::vec(arb_opt(), 0..80)) {
            let msgs = try_build_push_replies(&opts).expect("valid");
            let mut got = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                prop_assert!(m.len() < PUSH_BUNDLE_SIZE);
                let p = parse_push_reply(m).expect("parse");
                prop_assert_eq!(p.more_follows(), i + 1 < msgs.len());
                got.extend(p.options);
            }
            prop_assert_eq!(got, opts);
        }

        #[test]
        fn reader_round_trip(
            msgs in prop::collection::vec("[ -~]{1,40}", 0..10),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let mut stream = Vec::new();
            for m in &msgs {
                encode_control_message(m, &mut stream);
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut r = ControlMessageReader::new();
            let mut got = Vec::new();
            for w in points.windows(2) {
                r.push(&stream[w[0]..w[1]]);
                got.extend(std::iter::from_fn(|| r.next_message()));
            }
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn reader_never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..8)) {
            let mut r = ControlMessageReader::with_limit(16);
            for c in &chunks {
                r.push(c);
                while let Some(m) = r.next_message() {
                    prop_assert!(!m.is_empty());
                }
                prop_assert!(r.pending_len() <= 16);
            }
        }
    }
}
