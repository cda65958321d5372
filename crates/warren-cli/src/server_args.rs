//! `warren server`: the arguments, and the configuration they stand for; warren-server
//! runs it ([`warren_server::run`]).
//!
//! Without `--config` the options describe a zero-config server: the
//! [`warren_config::ZeroConfig`] they stand for is lowered like a file, so every default and
//! check lives in warren-config. With `--config server.conf` the file says everything.
//!
//! The order matters: the signal descriptor first (before any thread exists), then the
//! config, logging, the state directory (created on the first run, which is reported
//! here), and then warren-server's part.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use warren_store::RateLimitConfig;

use anyhow::{Context, Result, anyhow};
use ipnet::Ipv4Net;
use tracing::warn;
use warren_config::UserAuth;
use warren_io::{Clock, Signals};
use warren_pki::{CaOptions, KeyAlgorithm, LeafOptions};
use warren_server::state::{DEFAULT_STATE_DIR, Layout, StateOptions, ensure_state};
use warren_server::{Account, ConfigSource, Launch, StoreBacked};

use crate::args::parse_algo;
use crate::logging;

/// How clients authenticate (`--auth`; `warren-auth` in a server.conf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthMode {
    /// A client certificate from the CA; users that have a password must also give it.
    #[default]
    Cert,
    /// A client certificate and the user's password, for every user.
    #[value(name = "cert+password")]
    CertPassword,
    /// User name and password only; no client certificate is asked for.
    Password,
}

impl AuthMode {
    fn user_auth(self) -> UserAuth {
        match self {
            AuthMode::Cert => UserAuth::Cert,
            AuthMode::CertPassword => UserAuth::CertPassword,
            AuthMode::Password => UserAuth::Password,
        }
    }
}

/// `warren server` options. Without `--config` the others describe the zero-config server;
/// with it they are refused (the config file says everything).
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Run from an OpenVPN `server.conf` instead of the built-in defaults. Two warren
    /// directives in it connect it to a state directory: `warren-state-dir DIR` (users,
    /// revocations and address leases from DIR, checked as in zero-config mode) and
    /// `warren-auth cert|cert+password|password`. To share the file with `openvpn`, put
    /// `ignore-unknown-option warren-state-dir warren-auth` on a line before them.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The state directory (PKI, tls-crypt key, users) [env: WARREN_STATE_DIR] [default:
    /// /var/lib/warren]. Created on the first run.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub state_dir: Option<PathBuf>,
    /// How clients authenticate: `cert` (a client certificate, plus the password for users
    /// that have one), `cert+password` (both, for every user), `password` (user name and
    /// password, no client certificate).
    #[arg(long, value_enum, default_value_t = AuthMode::Cert, conflicts_with = "config")]
    pub auth: AuthMode,
    /// Key type of the CA and server certificate made on the first run: ecdsa-p256,
    /// ecdsa-p384, rsa2048, rsa3072, rsa4096, ed25519.
    #[arg(long, value_name = "ALGO", value_parser = parse_algo, conflicts_with = "config")]
    pub algo: Option<KeyAlgorithm>,
    /// UDP port.
    #[arg(long, default_value_t = warren_config::defaults::PORT, conflicts_with = "config")]
    pub port: u16,
    /// `udp` (IPv6 and IPv4), `udp4` or `udp6`.
    #[arg(long, value_enum, default_value_t = ProtoArg::Udp, conflicts_with = "config")]
    pub proto: ProtoArg,
    /// Also listen for OpenVPN over TCP on this port (`proto tcp-client` clients), in
    /// the same process: same users, address pool and status.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "config")]
    pub tcp: Option<u16>,
    /// Listen on this address only (default: all).
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    pub listen: Option<IpAddr>,
    /// The VPN network: the server takes .1, clients get addresses from the rest.
    #[arg(
        long,
        value_name = "CIDR",
        default_value = "10.8.0.0/24",
        value_parser = crate::parse_vpn_network,
        conflicts_with = "config"
    )]
    pub network: Ipv4Net,
    /// The tun device (`tun`: the first free tunN).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "tun",
        conflicts_with = "config"
    )]
    pub dev: String,
    /// An option pushed to every client, as in `push "..."` (repeatable), e.g.
    /// --push "route 192.168.1.0 255.255.255.0".
    #[arg(long = "push", value_name = "OPTION", conflicts_with = "config")]
    pub push: Vec<String>,
    /// Relay traffic between clients inside the server.
    #[arg(long, conflicts_with = "config")]
    pub client_to_client: bool,
    /// Send all the clients' traffic through the VPN: pushes `redirect-gateway def1` and DNS
    /// servers (--dns, else this machine's own), and turns NAT on (see --nat).
    #[arg(long, conflicts_with = "config")]
    pub full_tunnel: bool,
    /// A DNS server pushed to clients (`dhcp-option DNS`; repeatable).
    #[arg(long = "dns", value_name = "ADDR", conflicts_with = "config")]
    pub dns: Vec<IpAddr>,
    /// Masquerade the VPN network out of the uplink (an nftables table of warren's own and
    /// forwarding on the tun and the uplink, all undone at exit). Default: on with
    /// --full-tunnel, else off. In a server.conf: `warren-nat on|off`.
    #[arg(long, value_enum, value_name = "on|off", conflicts_with = "config")]
    pub nat: Option<OnOff>,
    /// The device NAT sends traffic out of (default: the device of the default route).
    #[arg(long, value_name = "DEV", conflicts_with = "config")]
    pub nat_uplink: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9586; the port
    /// defaults to 9586). Off by default. In a server.conf: `warren-metrics ADDR`.
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    pub metrics: Option<String>,
    /// At most this many clients at once.
    #[arg(long, value_name = "N", default_value_t = warren_config::defaults::MAX_CLIENTS, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "config")]
    pub max_clients: u32,
    /// Write an OpenVPN status file (version 2) every 60 seconds.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub status: Option<PathBuf>,
    /// Failed logins of one user from one address: BURST may come at once, then one per
    /// SECONDS; further attempts are refused without checking the password (default 5/12).
    #[arg(long, value_name = "BURST/SECONDS", value_parser = parse_login_limit, conflicts_with = "config")]
    pub login_limit: Option<(u32, u64)>,
    /// Move one packet per system call: no tun offloads, no UDP GRO/GSO (also
    /// WARREN_NO_OFFLOAD=1, or `warren-offload off` in server.conf). For kernels or
    /// networks where the offloads misbehave; much slower.
    #[arg(long)]
    pub no_offload: bool,
    /// Threads moving data: the main thread plus N-1 data workers, each with its own tun
    /// queue and UDP socket (also WARREN_WORKERS). Default: one per CPU core, at most 4.
    /// 1 keeps everything on one thread.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: Option<u16>,
    /// Run as this user once the tun device, the socket and the state are open, keeping
    /// only CAP_NET_ADMIN. Default: `warren` when that user exists, else `nobody`. `root`
    /// keeps root and every capability.
    #[arg(long, value_name = "USER", conflicts_with = "config")]
    pub user: Option<String>,
    /// The group to run as (default: the user's primary group; `nogroup` for `nobody`).
    #[arg(long, value_name = "GROUP", conflicts_with = "config")]
    pub group: Option<String>,
    /// The root helper that reads FILEs for SIGHUP reloads of an unprivileged server.
    #[arg(long, hide = true, num_args = 1.., value_name = "FILE")]
    pub internal_key_reader: Vec<PathBuf>,
}

/// `--login-limit BURST/SECONDS`.
fn parse_login_limit(s: &str) -> std::result::Result<(u32, u64), String> {
    let bad =
        || format!("{s:?}: expected BURST/SECONDS, e.g. 5/12 (BURST 1..1000, SECONDS 1..86400)");
    let (b, t) = s.split_once('/').ok_or_else(bad)?;
    let burst: u32 = b.trim().parse().map_err(|_| bad())?;
    let secs: u64 = t.trim().trim_end_matches('s').parse().map_err(|_| bad())?;
    if !(1..=1000).contains(&burst) || !(1..=86_400).contains(&secs) {
        return Err(bad());
    }
    Ok((burst, secs))
}

/// Most data threads chosen automatically.
const AUTO_MAX_THREADS: usize = 4;

/// Data threads: `--workers N`, else `WARREN_WORKERS`, else one per core up to 4.
pub(crate) fn data_threads(flag: Option<u16>) -> Result<usize> {
    let env = std::env::var("WARREN_WORKERS").ok();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    data_threads_from(flag, env.as_deref(), cores)
}

fn data_threads_from(flag: Option<u16>, env: Option<&str>, cores: usize) -> Result<usize> {
    if let Some(n) = flag {
        return Ok(usize::from(n));
    }
    match env.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=warren_io::MAX_STEERED_SOCKETS).contains(&n) => Ok(n),
            _ => Err(anyhow!(
                "WARREN_WORKERS={v}: expected a number of threads from 1 to {}",
                warren_io::MAX_STEERED_SOCKETS
            )),
        },
        None => Ok(cores.clamp(1, AUTO_MAX_THREADS)),
    }
}

/// Whether to use tun offloads and batched UDP: not with `--no-offload`,
/// `WARREN_NO_OFFLOAD=1` or `warren-offload off`. Returns the choice and, when off, why.
pub(crate) fn offload_choice(flag: bool, config: bool) -> (bool, Option<&'static str>) {
    let env = std::env::var("WARREN_NO_OFFLOAD").ok();
    offload_choice_from(flag, config, env.as_deref())
}

fn offload_choice_from(
    flag: bool,
    config: bool,
    env: Option<&str>,
) -> (bool, Option<&'static str>) {
    let env_off = env.is_some_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    });
    if flag {
        (false, Some("--no-offload"))
    } else if env_off {
        (false, Some("WARREN_NO_OFFLOAD"))
    } else if !config {
        (false, Some("warren-offload off"))
    } else {
        (true, None)
    }
}

/// `--nat on|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// `--proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtoArg {
    Udp,
    Udp4,
    Udp6,
}

impl ProtoArg {
    fn config_proto(self) -> warren_config::Proto {
        match self {
            ProtoArg::Udp => warren_config::Proto::Udp,
            ProtoArg::Udp4 => warren_config::Proto::Udp4,
            ProtoArg::Udp6 => warren_config::Proto::Udp6,
        }
    }
}

/// The state directory: `--state-dir`, else `WARREN_STATE_DIR`, else `/var/lib/warren`.
fn state_dir(args: &ServerArgs) -> PathBuf {
    if let Some(d) = &args.state_dir {
        return d.clone();
    }
    match std::env::var_os("WARREN_STATE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_STATE_DIR),
    }
}

/// The config the zero-config options stand for: the state's PKI and tls-crypt key, the
/// command-line options; warren-config supplies the rest.
fn zero_config(args: &ServerArgs) -> warren_config::ZeroConfig {
    let dir = state_dir(args);
    let layout = Layout::new(&dir);
    let network6 = crate::ula::zero_config_prefix(&dir);
    warren_config::ZeroConfig {
        ca: layout.ca_crt(),
        cert: layout.server_crt(),
        key: layout.server_key(),
        tls_crypt: layout.tls_crypt(),
        state_dir: dir,
        auth: args.auth.user_auth(),
        port: args.port,
        proto: args.proto.config_proto(),
        tcp: args.tcp,
        listen: args.listen,
        network: (args.network.addr(), args.network.prefix_len()),
        network6,
        dev: args.dev.clone(),
        push: args.push.clone(),
        client_to_client: args.client_to_client,
        max_clients: args.max_clients,
        status: args.status.clone(),
        full_tunnel: args.full_tunnel,
        // A full tunnel sends DNS queries through the VPN too: by default to the resolvers
        // this machine uses (a loopback stub is left out; clients cannot reach it).
        dns: if args.dns.is_empty() && args.full_tunnel {
            warren_net::system_nameservers()
        } else {
            args.dns.clone()
        },
        nat: args.nat.map(|n| n == OnOff::On),
        nat_uplink: args.nat_uplink.clone(),
        metrics: args.metrics.clone(),
    }
}

/// Zero-config: the state directory, filled with a CA, a server certificate and a tls-crypt
/// key on the first run.
fn prepare_state(args: &ServerArgs, sd: &warren_config::StateDir) -> Result<StoreBacked> {
    let dir = &sd.dir;
    let algo = args.algo.unwrap_or_default();
    let had_ca = Layout::new(dir).ca_crt().exists();
    let opts = StateOptions {
        ca: CaOptions {
            common_name: String::new(),
            algorithm: algo,
            ..CaOptions::default()
        },
        server_name: "server".to_owned(),
        server: LeafOptions {
            algorithm: algo,
            ..LeafOptions::default()
        },
    };
    let state = ensure_state(dir, &opts)
        .with_context(|| format!("preparing the state directory {}", dir.display()))?;
    if !state.created.is_empty() {
        eprint!("{}", first_run_text(dir, &state.created));
    }
    if had_ca && args.algo.is_some() {
        warn!(
            "--algo only applies when the CA is created; {} already has one ({})",
            dir.display(),
            state.pki.info().key_description
        );
    }
    let mut limits = RateLimitConfig::default();
    if let Some((burst, secs)) = args.login_limit {
        limits.per_user_burst = burst;
        limits.per_user_interval = std::time::Duration::from_secs(secs);
    }
    Ok(StoreBacked {
        store: state.store.clone(),
        mode: sd.auth,
        dir: dir.clone(),
        limits,
    })
}

/// What the first run prints: what was made, and the two commands that come next.
fn first_run_text(dir: &Path, created: &[String]) -> String {
    let mut out = String::from("warren: first run, created:\n");
    for line in created {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    let flag = if dir == Path::new(DEFAULT_STATE_DIR) {
        String::new()
    } else {
        format!(" --state-dir {}", dir.display())
    };
    out.push_str("Next, add a user and export their client profile:\n");
    out.push_str(&format!("  warren user add NAME{flag}\n"));
    out.push_str(&format!("  warren profile export NAME{flag} > NAME.ovpn\n"));
    out
}

pub fn run(args: &ServerArgs, verbose: u8, quiet: u8) -> Result<()> {
    // Before anything can spawn a thread: the mask is inherited.
    let signals = Signals::new().context("setting up signal handling")?;
    let clock = Clock::new().context("reading the system clocks")?;
    // Zero-config: the state directory's install id gives the tunnel its IPv6 /64.
    let no_ipv6 = match &args.config {
        None => crate::ula::ensure_install_id(&state_dir(args)).err(),
        Some(_) => None,
    };
    let source = match &args.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::Zero(Box::new(zero_config(args))),
    };
    // Config errors already read "server.conf:12: ..."; no extra context in front.
    let (cfg, warnings) = match &source {
        ConfigSource::File(path) => warren_config::load_server_config(path),
        ConfigSource::Zero(zero) => zero.lower(),
    }
    .map_err(anyhow::Error::new)?;
    // The management interface's log cache (`log`, `>LOG:`, `verb`, `mute`).
    let log = match &cfg.management {
        Some(_) => Some(
            warren_driver::management::LogTap::new(clock).context("setting up the log cache")?,
        ),
        None => None,
    };
    logging::init_with_tap(
        logging::adjust(logging::level_for_verb(cfg.verb), verbose, quiet),
        log.as_ref(),
    );
    for w in &warnings {
        warn!("{w}");
    }
    if let Some(e) = no_ipv6 {
        warn!("the tunnel carries IPv4 only: {e:#}");
    }
    if args.full_tunnel && !cfg.push.iter().any(|p| p.starts_with("dhcp-option DNS")) {
        warn!(
            "--full-tunnel: no DNS server to push (none usable in /etc/resolv.conf); clients keep \
             their own resolvers, which may answer outside the tunnel: add --dns ADDR"
        );
    }
    let store = match &cfg.state {
        None => None,
        Some(sd) if args.config.is_none() => Some(prepare_state(args, sd)?),
        Some(sd) => Some(warren_server::open_state(sd)?),
    };
    // The command line wins over the config file, which wins over WARREN_WORKERS.
    let threads = match (args.workers, cfg.workers) {
        (None, Some(n)) => usize::from(n),
        (flag, _) => data_threads(flag)?,
    };
    let launch = Launch {
        source,
        store,
        account: account(args),
        threads,
        offload_off: offload_choice(args.no_offload, cfg.offload).1,
        signals,
        clock,
        log,
    };
    Ok(warren_server::run(&cfg, launch)?)
}

/// Who the command line asks the server to run as.
fn account(args: &ServerArgs) -> Account {
    Account {
        zero_config: args.config.is_none(),
        user: args.user.clone(),
        group: args.group.clone(),
    }
}

/// `warren nat-undo --pid PID` (hidden): the privileged helper of a server that dropped
/// its privileges with NAT on.
pub fn nat_undo_helper(pid: u32, verbose: u8, quiet: u8) -> Result<()> {
    logging::init(logging::adjust(logging::level_for_verb(3), verbose, quiet));
    Ok(warren_server::nat_undo_helper(pid)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use warren_openvpn::HalfOpenLimits;
    use warren_server::convert::wrap_name;
    use warren_server::{engine_config, run_as};

    #[test]
    fn login_limit_syntax() {
        assert_eq!(parse_login_limit("5/12"), Ok((5, 12)));
        assert_eq!(parse_login_limit("3/600s"), Ok((3, 600)));
        for bad in ["5", "0/12", "5/0", "x/12", "5/100000", ""] {
            let e = parse_login_limit(bad).expect_err(bad);
            assert!(e.contains("expected BURST/SECONDS"), "{e}");
        }
    }

    #[test]
    fn data_thread_choice() {
        assert_eq!(data_threads_from(Some(3), Some("5"), 2).ok(), Some(3));
        assert_eq!(data_threads_from(None, Some("5"), 2).ok(), Some(5));
        assert_eq!(data_threads_from(None, Some(" "), 2).ok(), Some(2));
        assert_eq!(data_threads_from(None, None, 16).ok(), Some(4));
        assert_eq!(data_threads_from(None, None, 1).ok(), Some(1));
        assert!(data_threads_from(None, Some("0"), 2).is_err());
        assert!(data_threads_from(None, Some("many"), 2).is_err());
        assert!(data_threads_from(None, Some("65"), 2).is_err());
    }

    #[test]
    fn offload_switches() {
        assert_eq!(offload_choice_from(false, true, None), (true, None));
        assert_eq!(offload_choice_from(false, true, Some("0")), (true, None));
        assert_eq!(offload_choice_from(false, true, Some("")), (true, None));
        assert_eq!(
            offload_choice_from(true, true, None),
            (false, Some("--no-offload"))
        );
        assert_eq!(
            offload_choice_from(false, true, Some("1")),
            (false, Some("WARREN_NO_OFFLOAD"))
        );
        assert_eq!(
            offload_choice_from(false, false, Some("no")),
            (false, Some("warren-offload off"))
        );
    }

    #[test]
    fn first_run_names_the_next_commands() {
        let t = first_run_text(Path::new(DEFAULT_STATE_DIR), &["CA \"x\"".into()]);
        assert!(t.contains("  CA \"x\"\n"), "{t}");
        assert!(t.contains("  warren user add NAME\n"), "{t}");
        assert!(
            t.contains("  warren profile export NAME > NAME.ovpn\n"),
            "{t}"
        );
        let t = first_run_text(Path::new("/srv/w"), &[]);
        assert!(
            t.contains("warren user add NAME --state-dir /srv/w\n"),
            "{t}"
        );
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    fn args(argv: &[&str]) -> ServerArgs {
        use clap::Parser;
        Cli::parse_from(std::iter::once("server").chain(argv.iter().copied())).server
    }

    #[test]
    fn who_the_server_runs_as() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("state");
        ensure_state(&dir, &StateOptions::default()).expect("state");
        let d = dir.to_str().expect("utf8");
        let (cfg, _) = zero_config(&args(&["--state-dir", d]))
            .lower()
            .expect("zero");
        let debian = |n: &str, group: bool| {
            if group { n == "nogroup" } else { n == "nobody" }
        };
        let with_warren = |n: &str, group: bool| !group && (n == "warren" || n == "nobody");
        let s = |v: &str| Some(v.to_owned());
        let a = args(&["--state-dir", d]);
        assert_eq!(
            run_as(&account(&a), &cfg, true, &debian),
            Some((s("nobody"), s("nogroup")))
        );
        assert_eq!(
            run_as(&account(&a), &cfg, true, &with_warren),
            Some((s("warren"), None))
        );
        // Not root: nothing to drop.
        assert_eq!(run_as(&account(&a), &cfg, false, &debian), None);
        let a = args(&["--state-dir", d, "--user", "root"]);
        assert_eq!(run_as(&account(&a), &cfg, true, &debian), None);
        let a = args(&["--state-dir", d, "--user", "svc", "--group", "vpn"]);
        assert_eq!(
            run_as(&account(&a), &cfg, true, &debian),
            Some((s("svc"), s("vpn")))
        );
        // A server.conf says it itself: no `user`/`group`, no drop.
        let conf = tmp.path().join("server.conf");
        std::fs::write(&conf, "dev tun\n").expect("write");
        let a = args(&["--config", conf.to_str().expect("utf8")]);
        assert_eq!(run_as(&account(&a), &cfg, true, &with_warren), None);
        let mut with_user = cfg.clone();
        with_user.user = s("nobody");
        assert_eq!(
            run_as(&account(&a), &with_user, true, &debian),
            Some((s("nobody"), None))
        );
    }

    #[test]
    fn zero_config_engine_matches_openvpn_defaults() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("state");
        ensure_state(&dir, &StateOptions::default()).expect("state");
        let dir_arg = dir.to_str().expect("utf8");
        let (cfg, w) = zero_config(&args(&["--state-dir", dir_arg]))
            .lower()
            .expect("zero");
        assert!(w.is_empty(), "{w:?}");
        let e = engine_config(&cfg, 0).expect("engine config");
        let secs = Duration::from_secs;
        assert_eq!(
            (e.ping, e.ping_restart, e.push_ping, e.push_ping_restart),
            (Some(secs(10)), Some(secs(240)), Some(10), Some(120))
        );
        assert_eq!(
            (e.reneg, e.hand_window, e.tls_timeout),
            (Some(secs(3600)), secs(60), secs(2))
        );
        assert_eq!(
            (e.tun_mtu, e.mssfix, e.max_clients),
            (1500, Some(1492), 1024)
        );
        assert_eq!(
            e.half_open,
            HalfOpenLimits {
                per_source: 16,
                total: 1024
            }
        );
        assert!(
            e.explicit_exit_notify && e.external_auth && !e.duplicate_cn && !e.client_to_client
        );
        assert_eq!((wrap_name(&e.wrap), e.data_ciphers.len()), ("tls-crypt", 3));
        assert_eq!(
            (e.netmask.to_string(), cfg.prefix_len(), cfg.verb),
            ("255.255.255.0".into(), 24, 3)
        );

        let a = [
            "--state-dir",
            dir_arg,
            "--auth",
            "password",
            "--network",
            "10.9.0.0/16",
        ];
        // (`--network 10.9.0.7/16`, host bits set, is refused by the argument parser.)
        let (cfg, _) = zero_config(&args(&a)).lower().expect("zero-config");
        assert_eq!(cfg.client_cert(), warren_config::VerifyClientCert::None);
        assert_eq!(
            engine_config(&cfg, 0).expect("engine").network.to_string(),
            "10.9.0.0"
        );
        for m in [AuthMode::Cert, AuthMode::CertPassword, AuthMode::Password] {
            let a = m.user_auth().as_str();
            assert_eq!(zero_config(&args(&["--auth", a])).auth, m.user_auth());
        }
        let e = zero_config(&args(&["--push", "route a,b"]))
            .lower()
            .expect_err("comma");
        assert!(e.to_string().contains("cannot contain commas"), "{e}");
    }

    #[test]
    fn full_tunnel_flags() {
        let (c, _) = zero_config(&args(&["--full-tunnel", "--dns", "192.0.2.53"]))
            .lower()
            .expect("zero-config");
        assert_eq!(
            c.push,
            ["redirect-gateway def1", "dhcp-option DNS 192.0.2.53"]
        );
        assert_eq!(c.nat, Some(warren_config::NatConfig::default()));
        let a = ["--full-tunnel", "--dns", "192.0.2.53", "--nat", "off"];
        let (c, _) = zero_config(&args(&a)).lower().expect("zero-config");
        assert_eq!((c.nat, c.push.len()), (None, 2));
        let a = ["--nat", "on", "--nat-uplink", "eth1"];
        let (c, _) = zero_config(&args(&a)).lower().expect("zero-config");
        assert_eq!(c.nat.and_then(|n| n.uplink).as_deref(), Some("eth1"));
        assert!(c.push.is_empty(), "NAT alone pushes nothing");
        let (c, _) = zero_config(&args(&[])).lower().expect("zero-config");
        assert_eq!(c.nat, None, "split tunnel, no NAT by default");
    }
}
