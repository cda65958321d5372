//! `warren server`: from the state directory (zero-config) or a `server.conf` to a running
//! loop.
//!
//! Two ways in:
//!
//! * **Zero-config** (no `--config`): the state directory (`--state-dir`, default
//!   `/var/lib/warren`) is opened, and on the first run filled with a CA, a server certificate
//!   and a tls-crypt key; then warren serves on UDP 1194 with a 10.8.0.0/24 pool, OpenVPN
//!   2.6's default data ciphers, `keepalive 10 120`, `explicit-exit-notify` and
//!   `topology subnet`. Users, revocations and address leases come from the state's
//!   database, checked off the packet loop by [`crate::auth::StoreAuth`].
//! * **`--config server.conf`**: as with `openvpn --config`. Two warren directives connect
//!   such a server to a state directory: `warren-state-dir DIR` (users, revocations and
//!   leases from DIR's database, exactly as in zero-config mode) and `warren-auth
//!   cert|cert+password|password`. Stock OpenVPN refuses unknown directives, so a file shared
//!   with `openvpn` puts `ignore-unknown-option warren-state-dir warren-auth` before them.
//!   They are read here, before the config is lowered (they configure this binary's
//!   authentication, not the OpenVPN-compatible engine).
//!
//! The order matters: the signal descriptor first (before any thread exists), then the
//! config or state, logging, the engine, the privileged resources (tun, socket), the auth
//! worker, the privilege drop, and finally the loop.
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ipnet::Ipv4Net;
use tracing::{info, warn};
use warren_crypto::CipherKind;
use warren_io::{
    Clock, OffloadMode, OffloadTun, OffloadTunConfig, OsRng, Signals, TunConfig, UdpBind, UdpFamily,
};
use warren_openvpn::tls::{CertRole, ClientCertMode, ServerTlsOptions};
use warren_openvpn::{KeyDerivation, Server, ServerConfig, WrapConfig};
use warren_pki::{CaOptions, KeyAlgorithm, LeafOptions};
use warren_store::{RateLimitConfig, SqliteStore, Store};

use crate::auth::{AuthMode, Pool, StoreAuth};
use crate::convert::{cert_role, tls_version, wrap_config, wrap_name};
use crate::logging;
use crate::state::{DEFAULT_STATE_DIR, Layout, StateOptions, ensure_state, parse_algo};

/// OpenVPN 2.6 defaults for what `server.conf` leaves out.
const DEFAULT_RENEG_SEC: u32 = 3600;
const DEFAULT_HAND_WINDOW: u32 = 60;
const DEFAULT_TLS_TIMEOUT: u32 = 2;
const DEFAULT_MAX_CLIENTS: u32 = 1024;
const DEFAULT_TUN_MTU: u16 = 1500;
/// `status FILE` without a period: OpenVPN rewrites it every 60 s.
const DEFAULT_STATUS_SECS: u32 = 60;
/// How long the loop keeps running after SIGTERM to deliver exit notifications.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Zero-config `keepalive 10 120` (what OpenVPN's sample server.conf uses).
const ZERO_CONFIG_KEEPALIVE: (u32, u32) = (10, 120);
/// The warren directives of a server.conf (see the module docs).
const STATE_DIR_DIRECTIVE: &str = "warren-state-dir";
const AUTH_DIRECTIVE: &str = "warren-auth";

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
    #[arg(long, default_value_t = 1194, conflicts_with = "config")]
    pub port: u16,
    /// `udp` (IPv6 and IPv4), `udp4` or `udp6`.
    #[arg(long, value_enum, default_value_t = ProtoArg::Udp, conflicts_with = "config")]
    pub proto: ProtoArg,
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
    /// At most this many clients at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CLIENTS, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "config")]
    pub max_clients: u32,
    /// Write an OpenVPN status file (version 2) every 60 seconds.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub status: Option<PathBuf>,
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

/// The user database behind a server, and how it is used.
struct StoreBacked {
    store: Arc<SqliteStore>,
    mode: AuthMode,
    dir: PathBuf,
}

/// Everything besides the engine plan that `serve` needs.
struct Extras {
    status: Option<warren_driver::StatusOptions>,
    /// Why tun offloads and batched UDP are off (`None`: on).
    offload_off: Option<&'static str>,
    /// Threads moving data (1: the main loop alone).
    threads: usize,
    user: Option<String>,
    group: Option<String>,
    store: Option<StoreBacked>,
}

pub fn run(args: &ServerArgs, verbose: u8, quiet: u8) -> Result<()> {
    // Before anything can spawn a thread: the mask is inherited.
    let signals = Signals::new().context("setting up signal handling")?;
    let clock = Clock::new().context("reading the system clocks")?;
    match &args.config {
        Some(path) => run_config(
            path,
            args.no_offload,
            args.workers,
            signals,
            clock,
            verbose,
            quiet,
        ),
        None => run_zero_config(args, signals, clock, verbose, quiet),
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

fn run_zero_config(
    args: &ServerArgs,
    signals: Signals,
    clock: Clock,
    verbose: u8,
    quiet: u8,
) -> Result<()> {
    logging::init(logging::adjust(logging::level_for_verb(3), verbose, quiet));
    let dir = state_dir(args);
    let algo = args.algo.unwrap_or_default();
    let had_ca = Layout::new(&dir).ca_crt().exists();
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
    let state = ensure_state(&dir, &opts)
        .with_context(|| format!("preparing the state directory {}", dir.display()))?;
    if !state.created.is_empty() {
        eprint!("{}", first_run_text(&dir, &state.created));
    }
    if had_ca && args.algo.is_some() {
        warn!(
            "--algo only applies when the CA is created; {} already has one ({})",
            dir.display(),
            state.pki.info().key_description
        );
    }
    let plan = Plan::zero_config(args, &state, clock.unix_time_at_zero())?;
    let status = match &args.status {
        Some(path) => Some(warren_driver::StatusOptions {
            file: warren_driver::status::StatusFile::open(path)
                .context("opening the status file")?,
            interval: Duration::from_secs(u64::from(DEFAULT_STATUS_SECS)),
            version: warren_driver::status::StatusVersion::from_number(2)
                .ok_or_else(|| anyhow!("status-version 2 is not supported"))?,
        }),
        None => None,
    };
    let extras = Extras {
        status,
        offload_off: offload_choice(args.no_offload, true).1,
        threads: data_threads(args.workers)?,
        user: None,
        group: None,
        store: Some(StoreBacked {
            store: state.store.clone(),
            mode: args.auth,
            dir: dir.clone(),
        }),
    };
    serve(plan, extras, signals, clock)
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

fn run_config(
    config_path: &Path,
    no_offload: bool,
    workers_flag: Option<u16>,
    signals: Signals,
    clock: Clock,
    verbose: u8,
    quiet: u8,
) -> Result<()> {
    let (cfg, warnings, directives) = load_config(config_path)?;
    logging::init(logging::adjust(
        logging::level_for_verb(cfg.verb),
        verbose,
        quiet,
    ));
    for w in &warnings {
        warn!("{w}");
    }
    let store = match &directives.state_dir {
        Some(dir) => {
            let layout = Layout::new(dir);
            if !layout.db().exists() {
                bail!(
                    "`{STATE_DIR_DIRECTIVE} {}`: no warren state there; create it with `warren pki init --state-dir {0}` or `warren pki import DIR --state-dir {0}`",
                    dir.display()
                );
            }
            let store = SqliteStore::open(&layout.db())
                .with_context(|| format!("opening {}", layout.db().display()))?;
            Some(StoreBacked {
                store: Arc::new(store),
                mode: directives.auth.unwrap_or_default(),
                dir: dir.clone(),
            })
        }
        None => None,
    };
    let plan = Plan::from_config(
        &cfg,
        clock.unix_time_at_zero(),
        store.as_ref().map(|s| s.mode),
    )?;
    for note in &plan.notes {
        info!("{note}");
    }
    // Opened before the privilege drop, like OpenVPN, so `user nobody` can still update it.
    let status = match &cfg.status {
        Some((path, secs)) => Some(warren_driver::StatusOptions {
            file: warren_driver::status::StatusFile::open(path)
                .context("opening the `status` file")?,
            interval: Duration::from_secs(u64::from(if *secs == 0 {
                DEFAULT_STATUS_SECS
            } else {
                *secs
            })),
            version: warren_driver::status::StatusVersion::from_number(cfg.status_version)
                .ok_or_else(|| {
                    anyhow!(
                        "status-version {} is not supported (use 1, 2 or 3)",
                        cfg.status_version
                    )
                })?,
        }),
        None => None,
    };
    let extras = Extras {
        status,
        offload_off: offload_choice(no_offload, cfg.offload).1,
        // The command line wins over the config file, which wins over WARREN_WORKERS.
        threads: match (workers_flag, cfg.workers) {
            (None, Some(n)) => usize::from(n),
            (flag, _) => data_threads(flag)?,
        },
        user: cfg.user.clone(),
        group: cfg.group.clone(),
        store,
    };
    serve(plan, extras, signals, clock)
}

/// The warren directives found in a server.conf.
#[derive(Debug, Default, PartialEq, Eq)]
struct WarrenDirectives {
    state_dir: Option<PathBuf>,
    auth: Option<AuthMode>,
}

/// Reads and lowers `server.conf`, taking the warren directives out first.
fn load_config(
    path: &Path,
) -> Result<(
    warren_config::ServerConfig,
    Vec<warren_config::Warning>,
    WarrenDirectives,
)> {
    let Ok(text) = std::fs::read(path).map(String::from_utf8) else {
        // Unreadable: let the config loader word the error ("cannot read ...").
        let (cfg, w) = warren_config::load_server_config(path).map_err(anyhow::Error::new)?;
        return Ok((cfg, w, WarrenDirectives::default()));
    };
    let Ok(text) = text else {
        // Not UTF-8: the loader names the bad line.
        let (cfg, w) = warren_config::load_server_config(path).map_err(anyhow::Error::new)?;
        return Ok((cfg, w, WarrenDirectives::default()));
    };
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let origin = path.display().to_string();
    let (rest, directives) = extract_warren_directives(&text, &origin, base)?;
    // Config errors already read "server.conf:12: ..."; no extra context in front.
    let (cfg, warnings) =
        warren_config::server_config_from_str(&rest, &origin, base).map_err(anyhow::Error::new)?;
    Ok((cfg, warnings, directives))
}

/// Takes `warren-state-dir` and `warren-auth` out of config text: returns the text with
/// those lines blanked (so line numbers in later errors stay right) and their values.
/// Text that does not even parse is returned as it is, for the loader to report.
fn extract_warren_directives(
    text: &str,
    origin: &str,
    base: &Path,
) -> Result<(String, WarrenDirectives)> {
    let Ok(parsed) = warren_config::parse_str(text, origin) else {
        return Ok((text.to_owned(), WarrenDirectives::default()));
    };
    let mut out = WarrenDirectives::default();
    let mut blank = Vec::new();
    for d in &parsed {
        let name = d.name.value.as_str();
        if name != STATE_DIR_DIRECTIVE && name != AUTH_DIRECTIVE {
            continue;
        }
        let loc = d.location();
        if d.inline.is_some() {
            bail!("{loc}: `{name}` cannot be an inline block");
        }
        let [arg] = d.args.as_slice() else {
            bail!("{loc}: `{name}` takes exactly one argument");
        };
        let value = arg.value.as_str();
        if name == STATE_DIR_DIRECTIVE {
            if value.is_empty() {
                bail!("{loc}: `{name}` needs a directory");
            }
            out.state_dir = Some(warren_config::resolve_path(value, base));
        } else {
            out.auth = Some(AuthMode::parse(value).ok_or_else(|| {
                anyhow!("{loc}: `{name} {value}`: use cert, cert+password or password")
            })?);
        }
        blank.push(d.line);
    }
    if out.auth.is_some() && out.state_dir.is_none() {
        bail!(
            "{origin}: `{AUTH_DIRECTIVE}` needs `{STATE_DIR_DIRECTIVE} DIR` (the users to check against)"
        );
    }
    if blank.is_empty() {
        return Ok((text.to_owned(), out));
    }
    let mut rest = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if blank.contains(&no) {
            if line.ends_with('\n') {
                rest.push('\n');
            }
        } else {
            rest.push_str(line);
        }
    }
    Ok((rest, out))
}

/// Opens the OS resources, starts the auth worker, drops privileges and runs the loop.
fn serve(plan: Plan, extras: Extras, signals: Signals, clock: Clock) -> Result<()> {
    let rng = OsRng::new().context("the kernel random generator (getrandom) is unavailable")?;
    let server = Server::new(plan.engine.clone(), Box::new(rng));
    let tun_addr = server.tun_address();
    let tun = OffloadTun::open(&OffloadTunConfig {
        tun: TunConfig {
            name: plan.dev.clone(),
            address: tun_addr,
            prefix: plan.prefix,
            mtu: plan.engine.tun_mtu,
        },
        offload: if extras.offload_off.is_none() {
            OffloadMode::Auto
        } else {
            OffloadMode::Off
        },
        multi_queue: extras.threads > 1,
    })
    .with_context(|| format!("opening tun device `{}`", plan.dev))?;
    let batched = extras.offload_off.is_none();
    let (socket, workers) = data_io(&plan.bind, &tun, batched, extras.threads)?;
    if let Some(why) = extras.offload_off {
        info!("offloads off ({why}): one packet per system call");
    }

    let auth = match &extras.store {
        Some(sb) => {
            let pool = Pool::new(plan.engine.network, plan.engine.netmask)
                .ok_or_else(|| anyhow!("invalid VPN network"))?;
            let store: Arc<dyn Store> = sb.store.clone();
            let a = StoreAuth::new(store, sb.mode, pool, RateLimitConfig::default());
            Some(
                warren_driver::AuthWorker::spawn(
                    Box::new(a),
                    clock,
                    warren_driver::AuthOptions::default(),
                )
                .context("starting the authentication thread")?,
            )
        }
        None => None,
    };

    if extras.user.is_some() || extras.group.is_some() {
        let (uid, gid) =
            warren_io::drop_privileges(extras.user.as_deref(), extras.group.as_deref())
                .context("dropping privileges (`user`/`group`)")?;
        info!("dropped privileges to uid {uid}, gid {gid}");
    }

    info!(
        "warren server listening on udp {}, tun {} {}/{}, {} clients max, {}, ciphers {}",
        socket.local_addr(),
        tun.name(),
        tun_addr,
        plan.prefix,
        plan.engine.max_clients,
        wrap_name(&plan.engine.wrap),
        plan.engine
            .data_ciphers
            .iter()
            .map(|c| warren_driver::cipher_name(*c))
            .collect::<Vec<_>>()
            .join(":"),
    );
    if let Some(sb) = &extras.store {
        info!(
            "authentication: {} (--auth {}); users, revocations and leases from {}",
            sb.mode.describe(),
            sb.mode.as_str(),
            sb.dir.display()
        );
    }

    let opts = warren_driver::ServerLoopOptions {
        clock,
        signals,
        status: extras.status,
        shutdown_grace: SHUTDOWN_GRACE,
        title: format!(
            "warren {} {}-linux",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        ),
        auth,
        workers,
    };
    warren_driver::run_server(server, tun, socket, opts).context("server loop")?;
    Ok(())
}

/// The main loop's UDP socket and, with several data threads, each worker's tun queue and
/// steered socket. A kernel that refuses the steering program or another tun queue gets
/// one data thread (with a warning), never unsteered sockets.
fn data_io(
    bind: &warren_io::UdpBind,
    tun: &OffloadTun,
    batched: bool,
    threads: usize,
) -> Result<(warren_driver::UdpIo, Vec<warren_driver::WorkerIo>)> {
    let single = || {
        warren_driver::UdpIo::bind(bind, batched)
            .map(|s| (s, Vec::new()))
            .context("opening the UDP socket")
    };
    if threads <= 1 {
        return single();
    }
    let sockets = match warren_io::bind_steered(bind, threads) {
        Ok(s) => s,
        Err(warren_io::SteerError::Bind(e)) => {
            return Err(e).context("opening the UDP sockets");
        }
        Err(e) => {
            warn!("{e}: running one data thread");
            return single();
        }
    };
    let mut udp = Vec::with_capacity(threads);
    for s in sockets {
        udp.push(
            warren_driver::UdpIo::from_socket(s, batched).context("setting up a data socket")?,
        );
    }
    let mut workers = Vec::with_capacity(threads - 1);
    let mut it = udp.into_iter();
    let Some(main) = it.next() else {
        return single();
    };
    for u in it {
        match tun.open_queue() {
            Ok(q) => workers.push(warren_driver::WorkerIo { tun: q, udp: u }),
            Err(e) => {
                warn!("opening another tun queue failed ({e}): running one data thread");
                drop(workers);
                drop(main);
                return single();
            }
        }
    }
    Ok((main, workers))
}

/// Everything derived from the config before any OS resource is touched.
#[derive(Debug)]
struct Plan {
    engine: ServerConfig,
    dev: String,
    prefix: u8,
    bind: UdpBind,
    /// Informational lines about ignored or translated directives.
    notes: Vec<String>,
}

impl Plan {
    /// `auth`: the store-backed authentication mode, when the config has
    /// `warren-state-dir` (it turns on the engine's external authentication, and `password`
    /// stops asking for client certificates).
    fn from_config(
        cfg: &warren_config::ServerConfig,
        unix_time_at_zero: u64,
        auth: Option<AuthMode>,
    ) -> Result<Plan> {
        let mut notes = Vec::new();
        if let Some(dh) = &cfg.dh {
            let what = dh
                .path()
                .map_or_else(|| "<dh> block".to_owned(), |p| p.display().to_string());
            notes.push(format!(
                "ignoring dh {what}: warren uses ECDHE key exchange only"
            ));
        }
        let bind = udp_bind(
            cfg.proto,
            cfg.local.as_deref(),
            cfg.port,
            cfg.sndbuf,
            cfg.rcvbuf,
        )?;

        let ca = cfg.ca.load().context("reading `ca`")?;
        let cert = cfg.cert.load().context("reading `cert`")?;
        let key = cfg.key.load().context("reading `key`")?;
        let tls_opts = ServerTlsOptions {
            min_version: cfg.tls_version_min.map(tls_version),
            max_version: cfg.tls_version_max.map(tls_version),
            remote_cert_tls: cfg.remote_cert_tls.map(cert_role),
            client_cert: match auth {
                Some(AuthMode::Password) => ClientCertMode::None,
                _ => client_cert_mode(cfg.verify_client_cert),
            },
        };
        let tls = warren_openvpn::tls::server_config(&ca, &cert, &key, &tls_opts)
            .context("setting up TLS from `ca`, `cert` and `key`")?;

        let wrap = wrap_config(
            cfg.tls_crypt.as_ref(),
            cfg.tls_auth.as_ref(),
            cfg.auth.as_deref(),
        )?;
        let ka = keepalive(cfg.keepalive, cfg.ping, cfg.ping_restart)?;
        let (data_ciphers, fallback, cipher_note) = ciphers(
            &cfg.data_ciphers,
            cfg.data_ciphers_fallback.as_deref(),
            cfg.cipher.as_deref(),
        )?;
        notes.extend(cipher_note);
        let (network, netmask) = cfg.server;
        let prefix = prefix_len(netmask)?;
        if prefix > 30 {
            bail!(
                "`server {network} {netmask}`: the network is too small for a server and a client (at most /30)"
            );
        }

        let engine = ServerConfig {
            tls,
            wrap,
            network,
            netmask,
            push: cfg.push.clone(),
            ping: ka.ping,
            ping_restart: ka.ping_restart,
            push_ping: ka.push_ping,
            push_ping_restart: ka.push_ping_restart,
            data_ciphers,
            data_ciphers_fallback: fallback,
            reneg: reneg(cfg.reneg_sec),
            hand_window: Duration::from_secs(u64::from(
                cfg.hand_window.unwrap_or(DEFAULT_HAND_WINDOW),
            )),
            tls_timeout: Duration::from_secs(u64::from(
                cfg.tls_timeout.unwrap_or(DEFAULT_TLS_TIMEOUT),
            )),
            client_to_client: cfg.client_to_client,
            duplicate_cn: cfg.duplicate_cn,
            max_clients: usize::try_from(cfg.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS))
                .unwrap_or(usize::MAX),
            explicit_exit_notify: cfg.explicit_exit_notify.is_some_and(|n| n > 0),
            tun_mtu: cfg.tun_mtu.unwrap_or(DEFAULT_TUN_MTU),
            mssfix: mssfix(cfg.mssfix, cfg.tun_mtu.unwrap_or(DEFAULT_TUN_MTU)),
            key_derivation: match cfg.key_derivation {
                warren_config::KeyDerivationPolicy::Auto => KeyDerivation::Auto,
                warren_config::KeyDerivationPolicy::Prf => KeyDerivation::ForcePrf,
            },
            external_auth: auth.is_some(),
            unix_time_at_zero,
        };
        Ok(Plan {
            engine,
            dev: cfg.dev.clone(),
            prefix,
            bind,
            notes,
        })
    }

    /// The zero-config server: the state's PKI and tls-crypt key, the command-line options,
    /// OpenVPN 2.6 defaults for the rest.
    fn zero_config(
        args: &ServerArgs,
        state: &crate::state::State,
        unix_time_at_zero: u64,
    ) -> Result<Plan> {
        let listen = args.listen.map(|ip| ip.to_string());
        let bind = udp_bind(
            args.proto.config_proto(),
            listen.as_deref(),
            args.port,
            None,
            None,
        )?;
        let wants_cert = args.auth.wants_certificate();
        let tls_opts = ServerTlsOptions {
            remote_cert_tls: wants_cert.then_some(CertRole::Client),
            client_cert: if wants_cert {
                ClientCertMode::Require
            } else {
                ClientCertMode::None
            },
            ..ServerTlsOptions::default()
        };
        let tls = warren_openvpn::tls::server_config(
            &state.ca_pem,
            &state.server_cert_pem,
            state.server_key_pem.as_str(),
            &tls_opts,
        )
        .context("setting up TLS from the state's CA and server certificate")?;
        let ka = keepalive(Some(ZERO_CONFIG_KEEPALIVE), None, None)?;
        let (data_ciphers, _, _) = ciphers(&[], None, None)?;
        let net = args.network.trunc();
        if net.prefix_len() > 30 {
            bail!(
                "--network {}: too small for a server and a client (at most /30)",
                args.network
            );
        }
        if net != args.network {
            warn!("--network {}: using the network {net}", args.network);
        }
        for p in &args.push {
            check_push(p)?;
        }
        let engine = ServerConfig {
            tls,
            wrap: WrapConfig::TlsCrypt {
                key: state.tls_crypt.clone(),
            },
            network: net.network(),
            netmask: net.netmask(),
            push: args.push.clone(),
            ping: ka.ping,
            ping_restart: ka.ping_restart,
            push_ping: ka.push_ping,
            push_ping_restart: ka.push_ping_restart,
            data_ciphers,
            data_ciphers_fallback: None,
            reneg: reneg(None),
            hand_window: Duration::from_secs(u64::from(DEFAULT_HAND_WINDOW)),
            tls_timeout: Duration::from_secs(u64::from(DEFAULT_TLS_TIMEOUT)),
            client_to_client: args.client_to_client,
            duplicate_cn: false,
            max_clients: usize::try_from(args.max_clients.max(1)).unwrap_or(usize::MAX),
            explicit_exit_notify: true,
            tun_mtu: DEFAULT_TUN_MTU,
            mssfix: mssfix(None, DEFAULT_TUN_MTU),
            key_derivation: KeyDerivation::Auto,
            external_auth: true,
            unix_time_at_zero,
        };
        Ok(Plan {
            engine,
            dev: args.dev.clone(),
            prefix: net.prefix_len(),
            bind,
            notes: Vec::new(),
        })
    }
}

/// A `--push` option must fit in the comma-separated `PUSH_REPLY` (OpenVPN push.c builds it
/// the same way: an option cannot contain a comma).
fn check_push(p: &str) -> Result<()> {
    if p.trim().is_empty() {
        bail!("--push: empty option");
    }
    if p.contains(',') || p.chars().any(char::is_control) || p.contains('"') {
        bail!("--push {p:?}: an option cannot contain commas, quotes or control characters");
    }
    // Each option in a PUSH_REPLY is at most 255 characters (openvpn-protocol.md, control
    // messages); a longer one is lost on the client: refuse it here instead.
    if p.len() > 255 {
        bail!(
            "--push: option is {} bytes long; OpenVPN clients accept at most 255",
            p.len()
        );
    }
    Ok(())
}

fn client_cert_mode(v: warren_config::VerifyClientCert) -> ClientCertMode {
    match v {
        warren_config::VerifyClientCert::None => ClientCertMode::None,
        warren_config::VerifyClientCert::Optional => ClientCertMode::Optional,
        warren_config::VerifyClientCert::Require => ClientCertMode::Require,
    }
}

/// The server's own ping timers and the pushed ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Keepalive {
    ping: Option<Duration>,
    ping_restart: Option<Duration>,
    push_ping: Option<u32>,
    push_ping_restart: Option<u32>,
}

/// OpenVPN helper.c `helper_keepalive`, server mode: `keepalive a b` sets the server's ping
/// to a and its ping-restart to 2b, and pushes `ping a` and `ping-restart b`. Explicit
/// `ping`/`ping-restart` (OpenVPN rejects them next to keepalive; the config loader does
/// too) set the server's own timers only.
fn keepalive(
    ka: Option<(u32, u32)>,
    ping: Option<u32>,
    ping_restart: Option<u32>,
) -> Result<Keepalive> {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    let mut out = Keepalive::default();
    if let Some((a, b)) = ka {
        if a == 0 || b == 0 {
            bail!("`keepalive {a} {b}`: parameters must be > 0");
        }
        if u64::from(a) * 2 > u64::from(b) {
            bail!(
                "`keepalive {a} {b}`: the restart timeout must be at least twice the ping interval (recommended: keepalive 10 60)"
            );
        }
        out.ping = Some(secs(a));
        out.ping_restart = Some(secs(b).saturating_mul(2));
        out.push_ping = Some(a);
        out.push_ping_restart = Some(b);
    }
    if let Some(p) = ping {
        out.ping = (p > 0).then(|| secs(p));
    }
    if let Some(r) = ping_restart {
        out.ping_restart = (r > 0).then(|| secs(r));
    }
    Ok(out)
}

/// OpenVPN mtu.h MSSFIX_DEFAULT: encapsulated packets of at most 1492 bytes.
const MSSFIX_DEFAULT: u16 = 1492;

/// `mssfix`. OpenVPN options.c (options_postprocess_mutate_ce): absent or bare `mssfix`
/// clamps to 1492-byte encapsulated packets when `tun-mtu` is the default 1500; with
/// another tun-mtu OpenVPN only clamps to the tun size, which the tun MTU already
/// enforces for the kernel's own MSS choice, so warren leaves it off. `mssfix 0` disables.
fn mssfix(configured: Option<u16>, tun_mtu: u16) -> Option<u16> {
    match configured {
        Some(0) => None,
        Some(n) => Some(n),
        None if tun_mtu == DEFAULT_TUN_MTU => Some(MSSFIX_DEFAULT),
        None => None,
    }
}

/// `reneg-sec` (default 3600; 0 disables).
fn reneg(v: Option<u32>) -> Option<Duration> {
    match v.unwrap_or(DEFAULT_RENEG_SEC) {
        0 => None,
        s => Some(Duration::from_secs(u64::from(s))),
    }
}

/// A contiguous netmask's prefix length.
fn prefix_len(mask: Ipv4Addr) -> Result<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) != 0 {
        bail!("netmask {mask} is not contiguous");
    }
    Ok(u8::try_from(ones).unwrap_or(32))
}

/// `proto`, `local`, `port`, `sndbuf`, `rcvbuf` as a socket plan.
fn udp_bind(
    proto: warren_config::Proto,
    local: Option<&str>,
    port: u16,
    sndbuf: Option<u32>,
    rcvbuf: Option<u32>,
) -> Result<UdpBind> {
    let family = match proto {
        warren_config::Proto::Udp => UdpFamily::Any,
        warren_config::Proto::Udp4 => UdpFamily::V4,
        warren_config::Proto::Udp6 => UdpFamily::V6,
        warren_config::Proto::TcpServer => {
            bail!("`proto tcp-server`: TCP is not supported yet; use `proto udp`")
        }
    };
    let local = match local {
        None => None,
        Some(s) => Some(resolve_local(s, family)?),
    };
    Ok(UdpBind {
        family,
        local,
        port,
        sndbuf,
        rcvbuf,
    })
}

/// `local` is an address or a host name (resolved once, like OpenVPN at startup).
fn resolve_local(s: &str, family: UdpFamily) -> Result<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addrs = (s, 0u16)
        .to_socket_addrs()
        .with_context(|| format!("resolving `local {s}`"))?;
    addrs
        .map(|a| a.ip())
        .find(|ip| match family {
            UdpFamily::V4 => ip.is_ipv4(),
            UdpFamily::V6 => ip.is_ipv6(),
            UdpFamily::Any => true,
        })
        .ok_or_else(|| anyhow!("`local {s}`: no address of the right family"))
}

/// `data-ciphers` and the fallback (`data-ciphers-fallback`, else `cipher`). A fallback
/// warren cannot do (CBC ciphers) is dropped with a note rather than refusing old configs.
fn ciphers(
    list: &[String],
    fallback: Option<&str>,
    cipher: Option<&str>,
) -> Result<(Vec<CipherKind>, Option<CipherKind>, Option<String>)> {
    let kinds = crate::convert::data_ciphers(list)?;
    let mut note = None;
    let fb = match fallback.or(cipher) {
        None => None,
        Some(n) => match CipherKind::from_name(n) {
            Some(k) => Some(k),
            None if fallback.is_some() => bail!(
                "`data-ciphers-fallback {n}`: not supported (use an AEAD cipher such as AES-256-GCM)"
            ),
            None => {
                note = Some(format!(
                    "ignoring cipher {n}: warren has no CBC data channel; clients that cannot negotiate data-ciphers (OpenVPN < 2.4) will be refused"
                ));
                None
            }
        },
    };
    Ok((kinds, fb, note))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn keepalive_follows_openvpn_helper() {
        let k = keepalive(Some((10, 120)), None, None).expect("ok");
        assert_eq!(k.ping, Some(Duration::from_secs(10)));
        assert_eq!(k.ping_restart, Some(Duration::from_secs(240)));
        assert_eq!(k.push_ping, Some(10));
        assert_eq!(k.push_ping_restart, Some(120));
        assert!(keepalive(Some((10, 15)), None, None).is_err());
        assert!(keepalive(Some((0, 15)), None, None).is_err());
        assert!(keepalive(Some((10, 20)), None, None).is_ok());
    }

    #[test]
    fn explicit_ping_overrides_own_timers_only() {
        let k = keepalive(Some((10, 60)), Some(5), Some(30)).expect("ok");
        assert_eq!(k.ping, Some(Duration::from_secs(5)));
        assert_eq!(k.ping_restart, Some(Duration::from_secs(30)));
        assert_eq!((k.push_ping, k.push_ping_restart), (Some(10), Some(60)));
        let k = keepalive(None, Some(7), None).expect("ok");
        assert_eq!(
            k,
            Keepalive {
                ping: Some(Duration::from_secs(7)),
                ..Keepalive::default()
            }
        );
        assert_eq!(
            keepalive(None, None, None).expect("ok"),
            Keepalive::default()
        );
    }

    #[test]
    fn mssfix_defaults() {
        assert_eq!(mssfix(None, 1500), Some(1492));
        assert_eq!(mssfix(None, 1400), None);
        assert_eq!(mssfix(Some(0), 1500), None);
        assert_eq!(mssfix(Some(1400), 1500), Some(1400));
    }

    #[test]
    fn reneg_defaults() {
        assert_eq!(reneg(None), Some(Duration::from_secs(3600)));
        assert_eq!(reneg(Some(0)), None);
        assert_eq!(reneg(Some(60)), Some(Duration::from_secs(60)));
    }

    #[test]
    fn netmasks() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)).expect("ok"), 24);
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 0, 0)).expect("ok"), 16);
        assert_eq!(
            prefix_len(Ipv4Addr::new(255, 255, 255, 255)).expect("ok"),
            32
        );
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)).expect("ok"), 0);
        assert!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)).is_err());
    }

    #[test]
    fn socket_plans() {
        use warren_config::Proto;
        let b = udp_bind(Proto::Udp, None, 1194, None, Some(0)).expect("ok");
        assert_eq!(
            b,
            UdpBind {
                family: UdpFamily::Any,
                local: None,
                port: 1194,
                sndbuf: None,
                rcvbuf: Some(0)
            }
        );
        let b = udp_bind(Proto::Udp4, Some("192.0.2.1"), 1194, None, None).expect("ok");
        assert_eq!(b.local, Some("192.0.2.1".parse().expect("ip")));
        assert_eq!(b.family, UdpFamily::V4);
        let b = udp_bind(Proto::Udp6, Some("::1"), 1, None, None).expect("ok");
        assert_eq!(b.family, UdpFamily::V6);
        let e = udp_bind(Proto::TcpServer, None, 1194, None, None).expect_err("tcp");
        assert!(e.to_string().contains("TCP is not supported yet"), "{e}");
        assert_eq!(
            resolve_local("localhost", UdpFamily::V4).expect("resolves"),
            IpAddr::from(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn warren_directives_are_taken_out() {
        let text = "port 1194\nignore-unknown-option warren-state-dir warren-auth\nwarren-state-dir /var/lib/warren # users\nwarren-auth cert+password\nserver 10.8.0.0 255.255.255.0\n";
        let (rest, d) =
            extract_warren_directives(text, "s.conf", Path::new("/etc/openvpn")).expect("ok");
        assert_eq!(
            rest,
            "port 1194\nignore-unknown-option warren-state-dir warren-auth\n\n\nserver 10.8.0.0 255.255.255.0\n"
        );
        assert_eq!(
            d,
            WarrenDirectives {
                state_dir: Some(PathBuf::from("/var/lib/warren")),
                auth: Some(AuthMode::CertPassword)
            }
        );
        // Relative directories resolve like `ca`: the current directory, then the config's.
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(tmp.path().join("st")).expect("mkdir");
        let (_, d) =
            extract_warren_directives("warren-state-dir st", "s.conf", tmp.path()).expect("ok");
        assert_eq!(d.state_dir, Some(tmp.path().join("st")));
        // Nothing to take out: unchanged.
        let (rest, d) =
            extract_warren_directives("port 1\n", "s.conf", Path::new(".")).expect("ok");
        assert_eq!(
            (rest.as_str(), d),
            ("port 1\n", WarrenDirectives::default())
        );
        for (bad, msg) in [
            (
                "warren-auth passwd\nwarren-state-dir /x\n",
                "s.conf:1: `warren-auth passwd`",
            ),
            ("warren-auth cert\n", "needs `warren-state-dir DIR`"),
            (
                "port 1\nwarren-state-dir\n",
                "s.conf:2: `warren-state-dir` takes exactly one",
            ),
            ("warren-state-dir a b\n", "takes exactly one"),
        ] {
            let e = extract_warren_directives(bad, "s.conf", Path::new(".")).expect_err(bad);
            assert!(e.to_string().contains(msg), "{bad}: {e}");
        }
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

    #[test]
    fn push_options_are_checked() {
        assert!(check_push("route 192.168.1.0 255.255.255.0").is_ok());
        assert!(check_push("dhcp-option DNS 10.8.0.1").is_ok());
        for bad in ["", "  ", "route a,b", "x\ny", "say \"hi\""] {
            assert!(check_push(bad).is_err(), "{bad:?}");
        }
        assert!(check_push(&format!("setenv X {}", "y".repeat(246))).is_ok());
        assert!(check_push(&format!("setenv X {}", "y".repeat(247))).is_err());
    }

    #[test]
    fn cipher_lists() {
        let (k, fb, note) = ciphers(&[], None, None).expect("defaults");
        assert_eq!(k.len(), 3);
        assert_eq!(warren_driver::cipher_name(k[0]), "AES-256-GCM");
        assert_eq!((fb, note), (None, None));
        let (k, fb, _) = ciphers(
            &["CHACHA20-POLY1305".into(), "AES-128-GCM".into()],
            Some("AES-256-GCM"),
            None,
        )
        .expect("ok");
        assert_eq!(
            k.iter()
                .map(|c| warren_driver::cipher_name(*c))
                .collect::<Vec<_>>(),
            ["CHACHA20-POLY1305", "AES-128-GCM"]
        );
        assert_eq!(fb.map(warren_driver::cipher_name), Some("AES-256-GCM"));
        let (_, fb, note) =
            ciphers(&[], None, Some("AES-256-CBC")).expect("old configs still load");
        assert_eq!(fb, None);
        assert!(note.expect("note").contains("ignoring cipher AES-256-CBC"));
        assert!(ciphers(&[], Some("BF-CBC"), None).is_err());
        assert!(ciphers(&["DES".into()], None, None).is_err());
    }
}
