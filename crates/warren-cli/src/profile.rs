//! `warren profile export`: one self-contained `.ovpn` file per user.
//!
//! The profile is plain OpenVPN 2.6 client syntax with inline `<ca>`, `<cert>`, `<key>` and
//! `<tls-crypt>`, so the stock `openvpn` client, NetworkManager's OpenVPN plugin and
//! `warren client` take it unchanged. It pins the server with `remote-cert-tls server`
//! (EKU serverAuth) and `verify-x509-name <server CN> name`; ciphers are left to OpenVPN
//! 2.6's negotiation (`data-ciphers` defaults on both sides).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use warren_pki::CertKind;
use warren_store::{CertFilter, CertRecord, Store};

use warren_server::state::{State, fmt_date, open_state_for_reading, wall_now, write_atomic};

use crate::args::StateDirArg;

/// The default OpenVPN port.
pub const DEFAULT_PORT: u16 = 1194;

/// `server-poll-timeout` of a `--fallback-tcp` profile: how long a client waits for an
/// answer over UDP before it tries TCP (the stock client's default is 120 s, in practice
/// 60 s: its `hand-window`).
pub const FALLBACK_POLL_TIMEOUT: u32 = 10;

/// `warren profile ...`
#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Print (or write) NAME's .ovpn profile.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The user.
    pub name: String,
    /// The server address clients connect to, HOST or HOST:PORT (repeatable; tried in order).
    /// Default: this machine's host name.
    #[arg(long = "remote", value_name = "HOST[:PORT]")]
    pub remotes: Vec<Remote>,
    /// Port for remotes given without one.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Transport.
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    pub proto: Proto,
    /// Fall back to TCP on PORT when UDP gets no answer: the profile lists every remote
    /// over UDP, then over TCP, as `<connection>` blocks with a short
    /// `server-poll-timeout` (the server needs `--tcp PORT`).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub fallback_tcp: Option<u16>,
    /// Make the client ask for a user name and password (default: when the user has a
    /// password).
    #[arg(long, conflicts_with = "no_auth_user_pass")]
    pub auth_user_pass: bool,
    /// Never ask for a password.
    #[arg(long)]
    pub no_auth_user_pass: bool,
    /// Leave out the client certificate and key (password-only servers).
    #[arg(long)]
    pub no_cert: bool,
    /// Write to FILE (0600) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `proto` of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Udp,
    Tcp,
}

/// One `remote` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    /// `None`: the `--port` default.
    pub port: Option<u16>,
}

impl FromStr for Remote {
    type Err = String;

    /// `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, tail) = rest.split_once(']').ok_or("missing ']'")?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| format!("invalid port {p:?}"))?),
                None if tail.is_empty() => None,
                None => return Err(format!("unexpected {tail:?} after ']'")),
            };
            (h.to_owned(), port)
        } else if s.matches(':').count() == 1 {
            let (h, p) = s.split_once(':').ok_or("invalid remote")?;
            (
                h.to_owned(),
                Some(p.parse().map_err(|_| format!("invalid port {p:?}"))?),
            )
        } else {
            (s.to_owned(), None)
        };
        validate_host(&host)?;
        if port == Some(0) {
            return Err("port 0".into());
        }
        Ok(Remote { host, port })
    }
}

/// Host names go verbatim into the profile: letters, digits, `.`, `-`, `_`, `:` only, so
/// nothing can inject another directive.
fn validate_host(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 253 {
        return Err(format!("invalid host {h:?}"));
    }
    if let Some(c) = h
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')))
    {
        return Err(format!("invalid character {c:?} in host {h:?}"));
    }
    Ok(())
}

/// What goes into a profile besides the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileOptions {
    /// `remote` lines (host, port), in order. Never empty.
    pub remotes: Vec<(String, u16)>,
    pub proto: Proto,
    /// `--fallback-tcp PORT`: `<connection>` blocks, UDP first, then TCP on this port.
    pub fallback_tcp: Option<u16>,
    /// `Some(true)`: add `auth-user-pass`; `None`: when the user has a password.
    pub auth_user_pass: Option<bool>,
    /// Include `<cert>` and `<key>`.
    pub with_cert: bool,
}

/// The newest usable client certificate of `user` that has its key.
pub fn client_cert(store: &dyn Store, user: &str, now: SystemTime) -> Result<Option<CertRecord>> {
    Ok(store
        .certs(&CertFilter {
            common_name: Some(user.to_owned()),
            kind: Some(CertKind::Client),
            unrevoked_only: true,
        })?
        .into_iter()
        .filter(|c| c.is_usable_at(now) && c.key_pem.is_some() && c.cert_pem.is_some())
        .max_by_key(|c| c.not_before))
}

/// Renders `user`'s profile.
pub fn render(state: &State, user: &str, opts: &ProfileOptions, now: SystemTime) -> Result<String> {
    let Some(u) = state.store.user(user)? else {
        bail!("no user {user:?} (add one with `warren user add {user}`)");
    };
    if !u.enabled {
        eprintln!("warning: user {user:?} is disabled; the server will refuse this profile");
    }
    if opts.remotes.is_empty() {
        bail!("no remote given");
    }
    for (h, _) in &opts.remotes {
        validate_host(h).map_err(anyhow::Error::msg)?;
    }
    let cert = if opts.with_cert {
        let Some(c) = client_cert(&*state.store, user, now)? else {
            bail!(
                "{user:?} has no valid certificate with a key; issue one with \
                 `warren pki issue client {user}` (or export a password-only profile with --no-cert)"
            );
        };
        Some(c)
    } else {
        None
    };
    let auth = opts.auth_user_pass.unwrap_or(u.password_hash.is_some());
    if !opts.with_cert && !auth {
        bail!(
            "a profile without certificate needs a password: {user:?} has none (set one with `warren user passwd {user}`)"
        );
    }
    let server = warren_pki::inspect_pem(&state.server_cert_pem, "server certificate")?;

    let mut s = String::with_capacity(8192);
    let _ = writeln!(s, "# warren VPN profile for {user}");
    if let Some(c) = &cert {
        let _ = writeln!(
            s,
            "# certificate {}, valid until {}",
            c.serial,
            fmt_date(c.not_after)
        );
    }
    s.push_str("client\ndev tun\n");
    match opts.fallback_tcp {
        None => {
            let _ = writeln!(
                s,
                "proto {}",
                match opts.proto {
                    Proto::Udp => "udp",
                    Proto::Tcp => "tcp",
                }
            );
            for (host, port) in &opts.remotes {
                let _ = writeln!(s, "remote {host} {port}");
            }
            s.push_str("resolv-retry infinite\nnobind\n");
        }
        Some(tcp_port) => {
            if opts.proto == Proto::Tcp {
                bail!("--fallback-tcp falls back from UDP: leave out --proto tcp");
            }
            // Per-connection options before the first block apply to every block (after
            // it they would apply to none).
            s.push_str("resolv-retry infinite\nnobind\n");
            let _ = writeln!(
                s,
                "# UDP first; no answer within {FALLBACK_POLL_TIMEOUT} s: TCP. After a session \
                 ends, warren starts again with UDP."
            );
            let _ = writeln!(s, "server-poll-timeout {FALLBACK_POLL_TIMEOUT}");
            let udp = opts.remotes.iter().map(|(h, p)| (h, *p, "udp"));
            let tcp = opts
                .remotes
                .iter()
                .map(|(h, _)| (h, tcp_port, "tcp-client"));
            for (host, port, proto) in udp.chain(tcp) {
                let _ = writeln!(
                    s,
                    "<connection>\nremote {host} {port} {proto}\n</connection>"
                );
            }
        }
    }
    s.push_str("persist-key\npersist-tun\n");
    s.push_str("remote-cert-tls server\n");
    let _ = writeln!(s, "verify-x509-name {} name", server.common_name);
    if auth {
        s.push_str("auth-user-pass\n");
    }
    s.push_str("verb 3\n");
    push_block(&mut s, "ca", &state.ca_pem);
    if let Some(c) = &cert
        && let (Some(pem), Some(key)) = (&c.cert_pem, &c.key_pem)
    {
        push_block(&mut s, "cert", pem);
        push_block(&mut s, "key", key.as_str());
    }
    let tc = zeroize::Zeroizing::new(state.tls_crypt.to_pem());
    push_block(&mut s, "tls-crypt", &tc);
    Ok(s)
}

fn push_block(s: &mut String, tag: &str, body: &str) {
    let _ = writeln!(s, "<{tag}>");
    s.push_str(body.trim_end());
    let _ = writeln!(s, "\n</{tag}>");
}

/// This machine's host name (the default `remote`).
fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim().to_owned();
    (!h.is_empty() && validate_host(&h).is_ok()).then_some(h)
}

pub fn run(args: ProfileArgs) -> Result<()> {
    match args.command {
        ProfileCommand::Export(a) => export(&args.state.state_dir, a),
    }
}

fn export(dir: &Path, a: ExportArgs) -> Result<()> {
    let state = open_state_for_reading(dir)?;
    let remotes: Vec<(String, u16)> = if a.remotes.is_empty() {
        let h = hostname().context("cannot tell this machine's host name; pass --remote HOST")?;
        eprintln!(
            "note: clients will connect to {h}:{} (this machine's host name); pass --remote HOST to change it",
            a.port
        );
        vec![(h, a.port)]
    } else {
        a.remotes
            .iter()
            .map(|r| (r.host.clone(), r.port.unwrap_or(a.port)))
            .collect()
    };
    let opts = ProfileOptions {
        remotes,
        proto: a.proto,
        fallback_tcp: a.fallback_tcp,
        auth_user_pass: if a.auth_user_pass {
            Some(true)
        } else if a.no_auth_user_pass {
            Some(false)
        } else {
            None
        },
        with_cert: !a.no_cert,
    };
    let text = zeroize::Zeroizing::new(render(&state, &a.name, &opts, wall_now())?);
    match a.out {
        Some(path) => {
            write_atomic(&path, text.as_bytes(), 0o600)?;
            eprintln!("wrote {}", path.display());
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the profile to standard output")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_pki::LeafOptions;
    use warren_server::state::{StateOptions, ensure_state};
    use warren_store::NewUser;

    #[test]
    fn remotes_parse() {
        let r: Remote = "vpn.example.org".parse().expect("host");
        assert_eq!(
            r,
            Remote {
                host: "vpn.example.org".into(),
                port: None
            }
        );
        let r: Remote = "1.2.3.4:443".parse().expect("host:port");
        assert_eq!(r.port, Some(443));
        let r: Remote = "[2001:db8::1]:1194".parse().expect("v6");
        assert_eq!((r.host.as_str(), r.port), ("2001:db8::1", Some(1194)));
        let r: Remote = "2001:db8::1".parse().expect("bare v6");
        assert_eq!(r.port, None);
        for bad in ["", "a b", "x\nremote evil 1", "h:0", "h:x", "[::1", "\"q\""] {
            assert!(bad.parse::<Remote>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rendered_profile_loads_with_warren_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = ensure_state(&dir.path().join("s"), &StateOptions::default()).expect("state");
        let now = wall_now();
        let issued = state
            .issue_client("alice", &LeafOptions::default(), now)
            .expect("issue");
        state
            .store
            .add_user(
                &NewUser::named("alice"),
                Some(&CertRecord::from_issued(&issued)),
                now,
            )
            .expect("add");
        let opts = ProfileOptions {
            remotes: vec![("vpn.example.org".into(), 1194), ("10.0.0.1".into(), 443)],
            proto: Proto::Udp,
            fallback_tcp: None,
            auth_user_pass: None,
            with_cert: true,
        };
        let text = render(&state, "alice", &opts, now).expect("render");
        assert!(!text.contains("auth-user-pass"), "no password, no prompt");
        let path = dir.path().join("alice.ovpn");
        std::fs::write(&path, &text).expect("write");
        let (cfg, warnings) = warren_config::load_client_config(&path).expect("parses");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.remotes.len(), 2);
        assert_eq!(cfg.ca.load().expect("ca").trim(), state.ca_pem.trim());
        assert_eq!(
            cfg.cert.expect("cert").load().expect("cert").trim(),
            issued.cert_pem.trim()
        );
        assert_eq!(
            cfg.key.expect("key").load().expect("key").trim(),
            issued.key_pem.as_str().trim()
        );
        let tc = cfg.tls_crypt.expect("tls-crypt").load().expect("tc");
        assert_eq!(
            warren_crypto::StaticKey::parse(&tc).expect("key"),
            state.tls_crypt
        );

        // Password-only profile.
        state
            .store
            .update_user(
                "alice",
                &warren_store::UserChange {
                    password_hash: Some(Some("$argon2id$fake".into())),
                    ..Default::default()
                },
            )
            .expect("update");
        let opts = ProfileOptions {
            with_cert: false,
            ..opts
        };
        let text = render(&state, "alice", &opts, now).expect("render");
        assert!(text.contains("\nauth-user-pass\n"));
        assert!(!text.contains("<cert>") && !text.contains("<key>"));
        std::fs::write(&path, &text).expect("write");
        let (cfg, _) = warren_config::load_client_config(&path).expect("parses");
        assert!(cfg.cert.is_none());
        assert_eq!(cfg.auth_user_pass, Some(None));
        assert!(render(&state, "bob", &opts, now).is_err());
    }

    #[test]
    fn fallback_profile_lists_udp_then_tcp_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = ensure_state(&dir.path().join("s"), &StateOptions::default()).expect("state");
        let now = wall_now();
        let issued = state
            .issue_client("alice", &LeafOptions::default(), now)
            .expect("issue");
        state
            .store
            .add_user(
                &NewUser::named("alice"),
                Some(&CertRecord::from_issued(&issued)),
                now,
            )
            .expect("add");
        let opts = ProfileOptions {
            remotes: vec![("vpn.example.org".into(), 1194), ("192.0.2.1".into(), 1195)],
            proto: Proto::Udp,
            fallback_tcp: Some(443),
            auth_user_pass: None,
            with_cert: true,
        };
        let text = render(&state, "alice", &opts, now).expect("render");
        assert!(!text.contains("\nproto "), "{text}");
        assert!(!text.contains("\nremote ") || text.contains("<connection>\nremote "));
        let path = dir.path().join("alice.ovpn");
        std::fs::write(&path, &text).expect("write");
        let (cfg, warnings) = warren_config::load_client_config(&path).expect("parses");
        assert!(warnings.is_empty(), "{warnings:?}");
        let got: Vec<_> = cfg
            .remotes
            .iter()
            .map(|r| (r.host.as_str(), r.port, r.proto.is_tcp()))
            .collect();
        assert_eq!(
            got,
            [
                ("vpn.example.org", 1194, false),
                ("192.0.2.1", 1195, false),
                ("vpn.example.org", 443, true),
                ("192.0.2.1", 443, true),
            ]
        );
        for r in &cfg.remotes {
            assert_eq!(
                r.entry.server_poll_timeout(),
                Some(std::time::Duration::from_secs(u64::from(
                    FALLBACK_POLL_TIMEOUT
                )))
            );
            assert!(r.entry.nobind, "nobind must come before the blocks");
        }
        let tcp_only = ProfileOptions {
            proto: Proto::Tcp,
            ..opts
        };
        let e = render(&state, "alice", &tcp_only, now).expect_err("tcp + fallback");
        assert!(e.to_string().contains("--fallback-tcp"), "{e}");
    }
}
