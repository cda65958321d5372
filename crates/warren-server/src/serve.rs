//! Running a server: from a lowered [`warren_config::ServerConfig`] to a running loop.
//!
//! Two ways in, both ending in the same `ServerConfig` (the binary lowers it):
//!
//! * **Zero-config**: the state directory (default `/var/lib/warren`), filled on the first
//!   run with a CA, a server certificate and a tls-crypt key ([`crate::state`]); warren
//!   serves on UDP 1194 with a 10.8.0.0/24 pool, OpenVPN 2.6's default data ciphers,
//!   `keepalive 10 120`, `explicit-exit-notify` and `topology subnet`. Users, revocations and
//!   address leases come from the state's database, checked off the packet loop by
//!   [`crate::auth::StoreAuth`].
//! * **A `server.conf`**, as with `openvpn --config`. Two warren directives connect such a
//!   server to a state directory: `warren-state-dir DIR` (users, revocations and leases from
//!   DIR's database, exactly as in zero-config mode) and `warren-auth
//!   cert|cert+password|password`. Stock OpenVPN refuses unknown directives, so a file shared
//!   with `openvpn` puts `ignore-unknown-option warren-state-dir warren-auth` before them.
//!
//! The order matters: the binary sets up signals (before any thread exists), the config,
//! logging and the state; then [`run`] builds the engine, opens the privileged resources (tun,
//! socket, database), sets up NAT (`warren-nat on`, `--full-tunnel`; after undoing what a
//! killed server left), drops privileges (to `user`/`group`, or for zero-config to `warren`
//! or `nobody`, keeping only CAP_NET_ADMIN), starts the auth worker, and finally runs the
//! loop; NAT is undone after it.
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Context, Error, Result};
use tracing::{info, warn};
use warren_config::UserAuth;
use warren_io::{
    Clock, OffloadMode, OffloadTun, OffloadTunConfig, OsRng, Signals, TunConfig, UdpBind, UdpFamily,
};
use warren_openvpn::pool::Pool;
use warren_openvpn::tls::{ClientCertMode, ServerTlsOptions};
use warren_openvpn::{HalfOpenLimits, Server, ServerConfig};
use warren_store::{RateLimitConfig, SqliteStore, Store};

use crate::auth::StoreAuth;
use crate::convert::{
    cert_role, cipher_with_auth, data_ciphers, key_derivation, tls_algorithms, tls_crypt_v2_server,
    tls_version, wrap_config, wrap_name, x509_match,
};
use crate::state::Layout;

/// How long the loop keeps running after SIGTERM to deliver exit notifications.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where the running configuration came from; SIGHUP reads it again from there.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A `server.conf` (`--config FILE`).
    File(PathBuf),
    /// Zero-config: the configuration the command-line options stand for.
    Zero(Box<warren_config::ZeroConfig>),
}

/// Who the command line asks the server to run as (see [`run_as`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// A zero-config server (a server.conf says it with `user`/`group`).
    pub zero_config: bool,
    /// `--user`.
    pub user: Option<String>,
    /// `--group`.
    pub group: Option<String>,
}

/// What [`run`] needs besides the configuration.
#[derive(Debug)]
pub struct Launch {
    /// Where the configuration came from.
    pub source: ConfigSource,
    /// The user database (zero-config, `warren-state-dir`).
    pub store: Option<StoreBacked>,
    pub account: Account,
    /// Threads moving data (the main thread included).
    pub threads: usize,
    /// Why tun offloads and batched UDP are off, when they are.
    pub offload_off: Option<&'static str>,
    /// Made before any thread existed.
    pub signals: Signals,
    pub clock: Clock,
    /// The log cache the logger fills, for the management interface (`log`, `>LOG:`,
    /// `verb`, `mute`).
    pub log: Option<warren_driver::management::LogTap>,
}

/// The dedicated account zero-config runs as when it exists.
const SERVICE_USER: &str = "warren";

/// Who to become after the setup: `user`/`group` of a server.conf, or for zero-config the
/// `--user`/`--group` options, else `warren` when it exists, else `nobody`. `None`: stay
/// (not root, `--user root`, or a server.conf without `user`/`group`).
///
/// Why not create a `warren` user on the fly: starting a server should not edit
/// `/etc/passwd` (that is the package's job, and it would outlive `rm -r` of the state
/// directory); the fallback `nobody` owns no files, so nothing of warren's becomes readable
/// to it: every later write goes through a descriptor opened before the drop.
pub fn run_as(
    account: &Account,
    cfg: &warren_config::ServerConfig,
    root: bool,
    exists: &dyn Fn(&str, bool) -> bool,
) -> Option<(Option<String>, Option<String>)> {
    if !account.zero_config {
        return (cfg.user.is_some() || cfg.group.is_some())
            .then(|| (cfg.user.clone(), cfg.group.clone()));
    }
    if !root {
        return None;
    }
    let user = match account.user.as_deref() {
        Some("root" | "0") => return None,
        Some(u) => u.to_owned(),
        None if exists(SERVICE_USER, false) => SERVICE_USER.to_owned(),
        None => "nobody".to_owned(),
    };
    let group = match &account.group {
        Some(g) => Some(g.clone()),
        // `nobody`'s primary group varies (nogroup on Debian, nobody on Fedora).
        None if user == "nobody" => ["nogroup", "nobody"]
            .into_iter()
            .find(|g| exists(g, true))
            .map(str::to_owned),
        None => None,
    };
    Some((Some(user), group))
}
/// Becomes the `run_as` user, keeping CAP_NET_ADMIN, and logs it.
fn drop_to(user: Option<&str>, group: Option<&str>) -> Result<()> {
    let d = warren_io::drop_privileges(user, group, warren_io::KeepCaps::NetAdmin).with_context(
        || {
            format!(
                "dropping privileges to {}:{}",
                user.unwrap_or("(same user)"),
                group.unwrap_or("(primary group)")
            )
        },
    )?;
    let uname = user.map_or_else(|| d.uid.to_string(), str::to_owned);
    let gname = match group {
        Some(g) => g.to_owned(),
        None => warren_io::group_name(d.gid).unwrap_or_else(|| d.gid.to_string()),
    };
    if d.uid == 0 {
        info!("changed group to {gname} (gid {}); still root", d.gid);
    } else if d.has_net_admin() {
        info!(
            "dropped privileges to {uname}:{gname} (uid {}, gid {}), keeping CAP_NET_ADMIN",
            d.uid, d.gid
        );
    } else {
        info!(
            "dropped privileges to {uname}:{gname} (uid {}, gid {})",
            d.uid, d.gid
        );
    }
    Ok(())
}

/// The user database behind a server, and how it is used.
#[derive(Debug)]
pub struct StoreBacked {
    pub store: Arc<SqliteStore>,
    pub mode: UserAuth,
    pub dir: PathBuf,
    /// Failed-login limits.
    pub limits: RateLimitConfig,
}

/// Runs the server until SIGINT/SIGTERM (see the module docs for the order).
pub fn run(cfg: &warren_config::ServerConfig, launch: Launch) -> Result<()> {
    // A server that will give up root keeps a root helper that reads its key files on
    // SIGHUP (the state directory and key files stay root's).
    let drops = run_as(&launch.account, cfg, true, &account_exists).is_some();
    let keys = if warren_io::is_root() && drops {
        Some(
            KeyReader::spawn(reload_files(&launch.source, cfg))
                .context("starting the key reader")?,
        )
    } else {
        None
    };
    let live = crate::crl::initial(cfg)?;
    let reload = reloader(
        &launch.source,
        cfg,
        launch.clock.unix_time_at_zero(),
        keys,
        live.clone(),
    );
    serve(cfg, launch, reload, &live)
}

/// SIGHUP: read the configuration again (the file, or the state directory's PKI files in
/// zero-config mode) and give the engine the new TLS configuration (CA, certificate, key),
/// which new handshakes and renegotiations use. Other changes need a restart; the log says
/// so. After a privilege drop the key may no longer be readable: then nothing changes.
fn reloader(
    source: &ConfigSource,
    running: &warren_config::ServerConfig,
    unix_time_at_zero: u64,
    mut keys: Option<KeyReader>,
    live: crate::crl::SharedTls,
) -> warren_driver::Reloader {
    let source = source.clone();
    let running = running.clone();
    warren_driver::Reloader(Box::new(move |server| {
        // Unprivileged: the files come from the root key reader (the paths of startup).
        let fetched = match keys.as_mut() {
            Some(k) if !warren_io::is_root() => Some(k.fetch()?),
            _ => None,
        };
        let (cfg, _) = match &source {
            ConfigSource::File(path) => match fetched.as_ref().and_then(|f| f.get(path)) {
                Some(text) => warren_config::server_config_from_str(
                    text,
                    &path.display().to_string(),
                    path.parent().unwrap_or_else(|| Path::new(".")),
                ),
                None => warren_config::load_server_config(path),
            },
            ConfigSource::Zero(zero) => zero.lower(),
        }
        .map_err(|e| e.to_string())?;
        let mut load = cfg.clone();
        if let Some(f) = &fetched {
            inline_files(&mut load, f);
        }
        let engine = live_engine_config(&load, unix_time_at_zero, &live).map_err(|e| {
            let text = e.report();
            let denied = e.is_permission_denied() || text.contains("Permission denied");
            if denied && !warren_io::is_root() {
                format!(
                    "{text}; the server runs unprivileged now and the key files are root's: \
                     restart it to load new keys"
                )
            } else {
                text
            }
        })?;
        server.set_tls_config(engine.tls);
        let mut lines = vec![format!(
            "TLS configuration (ca, cert, key) from {}; new handshakes and renegotiations use it",
            match &source {
                ConfigSource::File(path) => path.display().to_string(),
                ConfigSource::Zero(zero) => zero.state_dir.display().to_string(),
            }
        )];
        let mut rest = cfg.clone();
        rest.ca = running.ca.clone();
        rest.cert = running.cert.clone();
        rest.key = running.key.clone();
        if rest != running {
            lines
                .push("other changes in the configuration take effect only after a restart".into());
        }
        Ok(lines)
    }))
}

/// `user`/`group` lookups for [`run_as`].
fn account_exists(name: &str, group: bool) -> bool {
    if group {
        warren_io::group_exists(name)
    } else {
        warren_io::user_exists(name)
    }
}

/// The files a reload reads: the config file (server.conf mode), then the key material
/// that comes from files.
fn reload_files(source: &ConfigSource, cfg: &warren_config::ServerConfig) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match source {
        ConfigSource::File(path) => vec![path.clone()],
        ConfigSource::Zero(_) => Vec::new(),
    };
    let mut material = vec![&cfg.ca, &cfg.cert, &cfg.key];
    material.extend(cfg.tls_crypt.as_ref());
    material.extend(cfg.tls_auth.as_ref().map(|(m, _)| m));
    material.extend(cfg.tls_crypt_v2.as_ref().map(|v2| &v2.key));
    for m in material {
        if let warren_config::Material::File(p) = m {
            files.push(p.clone());
        }
    }
    files
}

/// Key material read from these files replaced by its text.
fn inline_files(
    cfg: &mut warren_config::ServerConfig,
    texts: &std::collections::HashMap<PathBuf, String>,
) {
    let mut material = vec![&mut cfg.ca, &mut cfg.cert, &mut cfg.key];
    material.extend(cfg.tls_crypt.as_mut());
    material.extend(cfg.tls_auth.as_mut().map(|(m, _)| m));
    material.extend(cfg.tls_crypt_v2.as_mut().map(|v2| &mut v2.key));
    for m in material {
        if let warren_config::Material::File(p) = m
            && let Some(t) = texts.get(p)
        {
            *m = warren_config::Material::Inline(t.clone());
        }
    }
}

/// A root helper that reads the reload's files (fixed at startup: the unprivileged server
/// can ask for nothing else) for a server that gave up root, the way OpenVPN's
/// `down-root` plugin keeps a privileged part. Protocol on its stdin/stdout: one byte asks,
/// and it answers per file `OK <len>\n<bytes>` or `ERR <reason>\n`. It ends when the
/// server's end of the pipe closes.
struct KeyReader {
    files: Vec<PathBuf>,
    to: std::process::ChildStdin,
    from: std::io::BufReader<std::process::ChildStdout>,
}

impl KeyReader {
    fn spawn(files: Vec<PathBuf>) -> std::io::Result<KeyReader> {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["server", "--internal-key-reader"])
            .args(&files)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            // Signals for the server's process group are not for it.
            .process_group(0)
            .spawn()?;
        let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the key reader has no pipes"));
        };
        Ok(KeyReader {
            files,
            to,
            from: std::io::BufReader::new(from),
        })
    }

    /// The current text of every file (a file that cannot be read is left out: loading it
    /// directly then reports why).
    fn fetch(&mut self) -> Result<std::collections::HashMap<PathBuf, String>, String> {
        use std::io::{BufRead, Read, Write};
        let gone = |e: std::io::Error| format!("the key reader is gone ({e}); restart the server");
        self.to.write_all(b"r").map_err(gone)?;
        self.to.flush().map_err(gone)?;
        let mut out = std::collections::HashMap::new();
        for path in &self.files {
            let mut line = String::new();
            if self.from.read_line(&mut line).map_err(gone)? == 0 {
                return Err("the key reader is gone; restart the server".into());
            }
            let Some(len) = line.trim_end().strip_prefix("OK ") else {
                continue;
            };
            let len: usize = len
                .parse()
                .map_err(|_| format!("key reader: bad answer {line:?}"))?;
            let mut buf = vec![0u8; len];
            self.from.read_exact(&mut buf).map_err(gone)?;
            let text =
                String::from_utf8(buf).map_err(|_| format!("{} is not text", path.display()))?;
            out.insert(path.clone(), text);
        }
        Ok(out)
    }
}

/// `warren server --internal-key-reader FILE...`: the root helper that reads key files for
/// a server that gave up root (`KeyReader`).
pub fn key_reader_main(files: &[PathBuf]) -> Result<()> {
    use std::io::{Read, Write};
    // SIGINT/SIGTERM/SIGHUP blocked, never read: it ends with the server's pipe.
    let _signals = Signals::new().context("setting up signal handling")?;
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut ask = [0u8; 1];
    loop {
        match stdin.read(&mut ask) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        let mut answer = |f| match std::fs::read(f) {
            Ok(bytes) => {
                writeln!(stdout, "OK {}", bytes.len()).and_then(|()| stdout.write_all(&bytes))
            }
            Err(e) => writeln!(stdout, "ERR {e}"),
        };
        files
            .iter()
            .try_for_each(&mut answer)
            .and_then(|()| stdout.flush())
            .context("answering the server")?;
    }
}

/// `warren-state-dir` in a server.conf: an existing state's database.
pub fn open_state(sd: &warren_config::StateDir) -> Result<StoreBacked> {
    let layout = Layout::new(&sd.dir);
    if !layout.db().exists() {
        return Err(Error::NoState(sd.dir.clone()));
    }
    let store = SqliteStore::open(&layout.db())
        .with_context(|| format!("opening {}", layout.db().display()))?;
    Ok(StoreBacked {
        store: Arc::new(store),
        mode: sd.auth,
        dir: sd.dir.clone(),
        limits: RateLimitConfig::default(),
    })
}

/// Builds the engine, opens the OS resources, drops privileges, starts the auth worker and
/// runs the loop.
fn serve(
    cfg: &warren_config::ServerConfig,
    launch: Launch,
    reload: warren_driver::Reloader,
    live: &crate::crl::SharedTls,
) -> Result<()> {
    let Launch {
        store,
        account,
        threads,
        offload_off,
        signals,
        clock,
        log,
        ..
    } = launch;
    let engine = live_engine_config(cfg, clock.unix_time_at_zero(), live)?;
    refuse_overlapping_network(engine.network, engine.netmask, &cfg.dev)?;
    let bind = if cfg.proto.is_tcp() {
        None
    } else {
        Some(udp_bind(
            cfg.proto,
            cfg.local.as_deref(),
            cfg.port,
            cfg.sndbuf,
            cfg.rcvbuf,
        )?)
    };
    let listeners = tcp_listeners(cfg)?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(
            warren_driver::MetricsListener::bind(addr)
                .with_context(|| format!("opening the metrics endpoint `warren-metrics {addr}`"))?,
        ),
        None => None,
    };
    // Connected before the privilege drop: the socket's path may be root's.
    let systemd = warren_driver::Systemd::from_env();
    let port_share = port_share_target(cfg)?;
    let prefix = cfg.prefix_len();
    // Opened before the privilege drop, like OpenVPN, so `user nobody` can still update it.
    let status = match cfg.status_file() {
        Some((path, interval)) => Some(warren_driver::StatusOptions {
            file: warren_driver::status::StatusFile::open(path)
                .context("opening the `status` file")?,
            interval,
            version: warren_driver::status::StatusVersion::from_number(cfg.status_version)
                .ok_or(Error::StatusVersion(cfg.status_version))?,
        }),
        None => None,
    };
    // TCP peers' packets are opened and sealed by the main thread, which reads and
    // writes their connections; the data workers move UDP peers' data (and hand TCP
    // peers' tun packets to the main thread).

    // A server killed before it could undo its NAT (kill -9, a crash) left its table and
    // forwarding flags behind: undo them first, whether or not this run uses NAT.
    if let Err(e) = warren_net::recover_abandoned_nat() {
        warn!("could not undo the NAT an earlier warren server left behind: {e}");
    }

    let rng = OsRng::new().context("the kernel random generator (getrandom) is unavailable")?;
    let mut server = Server::new(engine.clone(), Box::new(rng));
    if !cfg.access.is_empty() {
        let rules = crate::access::from_directives(&cfg.access)?;
        info!(
            "access rules (warren-access) for {} client identit(ies)",
            rules.len()
        );
        server.set_static_access(rules);
    }
    let tun_addr = server.tun_address();
    let tun = OffloadTun::open(&OffloadTunConfig {
        tun: TunConfig {
            name: cfg.dev.clone(),
            address: tun_addr,
            prefix,
            mtu: engine.tun_mtu,
        },
        offload: if offload_off.is_none() {
            OffloadMode::Auto
        } else {
            OffloadMode::Off
        },
        multi_queue: threads > 1,
    })
    .with_context(|| format!("opening tun device `{}`", cfg.dev))?;
    let ipv6 = cfg.ipv6();
    // Kept until the server ends.
    let _tun_ipv6 = match &ipv6 {
        Some(v6) => Some(tun_ipv6(tun.name(), v6, &cfg.route_ipv6)?),
        None => None,
    };
    // Kept until the server ends.
    let _tun_routes = tun_routes(tun.name(), &cfg.routes)?;
    let batched = offload_off.is_none();
    let (socket, workers) = match &bind {
        Some(bind) => {
            let (s, w) = data_io(bind, &tun, batched, threads)?;
            (Some(s), w)
        }
        None => (None, Vec::new()),
    };
    if let Some(why) = offload_off {
        info!("offloads off ({why}): one packet per system call");
    }

    // Before any thread exists (capabilities are per thread): become the unprivileged
    // user. Every later write goes through what is open now: the database connection (with
    // its WAL files, opened by this first read), the status file, the tun and the sockets.
    if let Some(sb) = &store {
        sb.store
            .revision()
            .with_context(|| format!("reading the database in {}", sb.dir.display()))?;
    }
    // Bound before the privilege drop, as OpenVPN does (a unix socket in a root-owned
    // directory, a port below 1024).
    let management = match &cfg.management {
        None => None,
        Some(m) => Some(crate::management::options(
            m,
            crate::management::ServerFacts {
                cfg,
                dev: tun.name(),
                tun_ip: tun_addr,
                netmask: engine.netmask,
                tun_mtu: engine.tun_mtu,
                local: socket
                    .as_ref()
                    .map(|s| s.local_addr())
                    .or_else(|| listeners.first().map(|l| l.local_addr())),
                start_unix: clock.unix_now(),
                status_version: warren_driver::status::StatusVersion::from_number(
                    cfg.status_version,
                )
                .ok_or(Error::StatusVersion(cfg.status_version))?,
                log,
            },
        )?),
    };
    // Scripts: `up` and `route-up` now, with the tun configured and before the privilege
    // drop, as OpenVPN runs them.
    let dev_name = tun.name().to_owned();
    let script_facts = crate::management::ServerFacts {
        cfg,
        dev: &dev_name,
        tun_ip: tun_addr,
        netmask: engine.netmask,
        tun_mtu: engine.tun_mtu,
        local: socket
            .as_ref()
            .map(|s| s.local_addr())
            .or_else(|| listeners.first().map(|l| l.local_addr())),
        start_unix: clock.unix_now(),
        status_version: warren_driver::status::StatusVersion::from_number(cfg.status_version)
            .ok_or(Error::StatusVersion(cfg.status_version))?,
        log: None,
    };
    let scripts = crate::scripts::server_scripts(&script_facts);
    crate::scripts::run_up(&script_facts, &scripts)?;
    let run_as_who = run_as(&account, cfg, warren_io::is_root(), &account_exists);
    // NAT before the privilege drop: `nft` and the forwarding sysctls need CAP_NET_ADMIN.
    // Undone after the loop, or by `Drop` on an error path; after a drop, by a helper
    // process started here that keeps root (see `setup_nat`).
    let nat = setup_nat(cfg, tun.name(), prefix, run_as_who.is_some())?;
    match run_as_who {
        Some((user, group)) => {
            if account.zero_config && account.user.is_none() && user.as_deref() == Some("nobody") {
                info!(
                    "no `{SERVICE_USER}` user on this system: running as nobody (a dedicated \
                     user is better: useradd --system --no-create-home --shell \
                     /usr/sbin/nologin {SERVICE_USER})"
                );
            }
            drop_to(user.as_deref(), group.as_deref())?;
        }
        None if account.zero_config && warren_io::is_root() => warn!(
            "running as root with every capability (--user root); without it warren runs as \
             `{SERVICE_USER}` or nobody, keeping only CAP_NET_ADMIN"
        ),
        None => {}
    }

    let auth = match &store {
        Some(sb) => {
            let pool = Pool::with_topology(engine.network, engine.netmask, engine.topology);
            let store: Arc<dyn Store> = sb.store.clone();
            let a = StoreAuth::new(store, sb.mode, pool, engine.duplicate_cn, sb.limits)
                .with_ccd(crate::ccd::CcdDir::from_config(cfg))
                .with_subnet_routes(tun.name());
            let mut opts = warren_driver::AuthOptions::default();
            let a: Box<dyn warren_driver::Authenticator> = if cfg.scripts.decide_logins() {
                // The store decides first, then the scripts (on the same pool, whose
                // threads then mostly wait on children: as many as script logins get).
                opts.verify_threads = opts.verify_threads.max(SCRIPT_THREADS);
                info!(
                    "logins: the user database decides, then auth-user-pass-verify and \
                     client-connect run"
                );
                Box::new(warren_driver::scripts::Scripted::new(
                    Box::new(a),
                    scripts.clone(),
                    crate::scripts::parse_fn(crate::ccd::CcdDir::from_config(cfg)),
                    clock,
                ))
            } else {
                Box::new(a)
            };
            info!(
                "password checks: {} thread(s), at most {} waiting (certificate-only logins never wait)",
                opts.verify_threads, opts.max_queued
            );
            Some(
                warren_driver::AuthWorker::spawn(a, clock, opts)
                    .context("starting the authentication threads")?,
            )
        }
        None if cfg.scripts.decide_logins() => {
            let a = warren_driver::scripts::ScriptAuth::new(
                scripts.clone(),
                crate::scripts::parse_fn(crate::ccd::CcdDir::from_config(cfg)),
                clock,
                Pool::with_topology(engine.network, engine.netmask, engine.topology),
            );
            // Script runs wait on a child, not the CPU: one thread each, so a slow script
            // holds up only its own client.
            let opts = warren_driver::AuthOptions {
                verify_threads: SCRIPT_THREADS,
                ..warren_driver::AuthOptions::default()
            };
            Some(
                warren_driver::AuthWorker::spawn(Box::new(a), clock, opts)
                    .context("starting the script threads")?,
            )
        }
        None => match crate::ccd::CcdDir::from_config(cfg) {
            Some(ccd) => Some(
                warren_driver::AuthWorker::spawn(
                    Box::new(crate::ccd::CcdAuth::new(ccd)),
                    clock,
                    warren_driver::AuthOptions::default(),
                )
                .context("starting the client-config-dir thread")?,
            ),
            None => None,
        },
    };
    let script_hooks = warren_driver::scripts::ScriptHooks::spawn(scripts.clone())
        .context("starting the script thread")?;

    let mut listening: Vec<String> = socket
        .iter()
        .map(|s| format!("udp {}", s.local_addr()))
        .collect();
    listening.extend(listeners.iter().map(|l| format!("tcp {}", l.local_addr())));
    info!(
        "warren server listening on {}, tun {} {}/{}{}, {} clients max, {}, ciphers {}",
        listening.join(", "),
        tun.name(),
        tun_addr,
        prefix,
        ipv6.map(|v| format!(" {}", v.local)).unwrap_or_default(),
        engine.max_clients,
        wrap_name(&engine.wrap),
        engine
            .data_ciphers
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(":"),
    );
    if let Some(sb) = &store {
        info!(
            "authentication: {} (--auth {}); users, revocations and leases from {}",
            crate::auth::describe(sb.mode),
            sb.mode.as_str(),
            sb.dir.display()
        );
    }

    let opts = warren_driver::ServerLoopOptions {
        clock,
        signals,
        status,
        shutdown_grace: SHUTDOWN_GRACE,
        title: format!(
            "warren {} {}-linux",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        ),
        auth,
        workers,
        reload: Some(reload),
        watch: crate::crl::watcher(cfg, live),
        management,
        metrics,
        systemd,
        scripts: script_hooks,
        tcp: (!listeners.is_empty()).then(|| warren_driver::TcpOptions {
            listeners,
            // Handshaking connections come on top of the connected clients.
            max_connections: engine.max_clients.saturating_add(TCP_EXTRA_CONNECTIONS),
            max_per_source: TCP_MAX_PER_SOURCE,
            hand_window: engine.hand_window,
            max_frame: (usize::from(engine.tun_mtu) + 512).max(2048),
            port_share: port_share.map(|target| warren_driver::PortShareOptions {
                target,
                max_connections: PORT_SHARE_MAX_CONNECTIONS,
            }),
        }),
    };
    let result = warren_driver::run_server(server, tun, socket, opts).context("server loop");
    crate::scripts::run_down(
        &script_facts,
        &scripts,
        if result.is_ok() { "sigterm" } else { "error" },
    );
    if let Some(mut nat) = nat
        && let Err(e) = nat.restore()
    {
        warn!("NAT not fully undone at exit: {e}; the next start removes the rest");
    }
    result.map(|_| ())
}

/// IPv6 on the server's tun: its address (`server-ipv6` P+1/B, or `ifconfig-ipv6`, without
/// duplicate address detection, as OpenVPN adds it) and the `route-ipv6` routes into it
/// (openvpn-ops.md §3.1). Both go with the device; the returned state (in memory) takes
/// them off at exit if the device is still there.
fn tun_ipv6(
    dev: &str,
    v6: &warren_config::ServerIpv6,
    routes: &[warren_config::RouteIpv6],
) -> Result<warren_net::NetState> {
    let mut net = warren_net::NetState::in_memory();
    net.add_address(dev, v6.local.addr.into(), v6.local.len, true)
        .with_context(|| {
            format!(
                "giving tun {dev} its IPv6 address {} (is IPv6 disabled on this host? \
                 sysctl net.ipv6.conf.default.disable_ipv6)",
                v6.local
            )
        })?;
    for r in routes {
        let route = warren_net::RouteSpec {
            dst: warren_net::IpNet::V6(warren_net::Ipv6Net::new(r.network.addr, r.network.len)),
            via: None,
            dev: Some(dev.to_owned()),
            metric: r.metric,
        };
        match net.add_route(&route) {
            Ok(()) => {}
            Err(e @ warren_net::NetError::RouteExists { .. }) => warn!("route-ipv6: {e}"),
            Err(e) => {
                return Err(e).with_context(|| format!("route-ipv6 {}", r.network));
            }
        }
    }
    Ok(net)
}

/// The server's `route` lines: kernel routes into its tun, for client networks (`iroute`
/// in a client-config-dir). Like OpenVPN with a tun, no gateway (openvpn-ops.md §6.4).
fn tun_routes(dev: &str, routes: &[warren_config::ServerRoute]) -> Result<warren_net::NetState> {
    let mut net = warren_net::NetState::in_memory();
    for r in routes {
        let route = warren_net::RouteSpec {
            dst: warren_net::IpNet::V4(warren_net::Ipv4Net::new(r.network, r.len)),
            via: None,
            dev: Some(dev.to_owned()),
            metric: r.metric,
        };
        match net.add_route(&route) {
            Ok(()) => {}
            Err(e @ warren_net::NetError::RouteExists { .. }) => warn!("route: {e}"),
            Err(e) => return Err(e).with_context(|| format!("route {r}")),
        }
    }
    Ok(net)
}

/// Whether `push` sends the clients' IPv6 into the tunnel (`redirect-gateway` with `ipv6`).
fn pushes_ipv6_gateway(push: &[String]) -> bool {
    push.iter().any(|p| {
        let mut t = p.split_ascii_whitespace();
        t.next() == Some("redirect-gateway") && t.any(|f| f == "ipv6")
    })
}

/// `warren-nat on` (`--full-tunnel`): masquerade the VPN network out of the uplink, with
/// forwarding on the tun and the uplink. `None` when NAT is off (a hint is logged if the
/// clients are told to send everything here all the same).
fn setup_nat(
    cfg: &warren_config::ServerConfig,
    tun: &str,
    prefix: u8,
    will_drop_privileges: bool,
) -> Result<Option<warren_net::Nat>> {
    let Some(nat) = &cfg.nat else {
        if cfg.push.iter().any(|p| p.starts_with("redirect-gateway")) {
            info!(
                "clients send all their traffic here (`push redirect-gateway`) and warren's NAT \
                 is off: add `warren-nat on` (or --full-tunnel), or masquerade it yourself"
            );
        }
        return Ok(None);
    };
    // IPv6 is masqueraded when clients are told to send theirs here
    // (`push "redirect-gateway ... ipv6"`); otherwise the tunnel's IPv6 network stays
    // inside, and the host's IPv6 forwarding is left alone.
    let v6: Vec<warren_net::Ipv6Net> = match cfg.ipv6() {
        Some(v) if v.pool.is_some() && pushes_ipv6_gateway(&cfg.push) => {
            vec![warren_net::Ipv6Net::new(v.local.addr, v.local.len)]
        }
        _ => Vec::new(),
    };
    let mut uplinks = match &nat.uplink {
        Some(dev) => vec![dev.clone()],
        None => warren_net::default_uplinks().context("finding the uplink for NAT")?,
    };
    if nat.uplink.is_none() && !v6.is_empty() {
        for d in warren_net::default_uplinks_v6().context("finding the IPv6 uplink for NAT")? {
            if !uplinks.contains(&d) {
                uplinks.push(d);
            }
        }
    }
    if uplinks.is_empty() {
        return Err(warren_net::NatError::NoUplink).context("setting up NAT (`warren-nat on`)");
    }
    let spec = warren_net::NatSpec {
        tun: tun.to_owned(),
        uplinks,
        v4: vec![warren_net::Ipv4Net::new(cfg.server.0, prefix)],
        v6,
    };
    let mut nat = warren_net::Nat::apply(&spec, Path::new(warren_net::DEFAULT_JOURNAL_DIR))
        .context("setting up NAT (`warren-nat on`)")?;
    if will_drop_privileges {
        // After the privilege drop this process can no longer delete the table or reset the
        // sysctls: a copy of warren started now, still privileged, waits for this one to end
        // (its stdin closes, also on SIGKILL) and undoes the NAT then.
        let mut helper = std::process::Command::new("/proc/self/exe");
        helper.args(["nat-undo", "--pid", &std::process::id().to_string()]);
        nat.delegate_undo(helper)
            .context("starting the NAT undo helper")?;
    }
    Ok(Some(nat))
}

/// `warren nat-undo --pid PID` (hidden): the privileged helper of a server that dropped
/// its privileges with NAT on.
pub fn nat_undo_helper(pid: u32) -> Result<()> {
    // SIGTERM, SIGINT, ... blocked (never read): a `systemctl stop` that signals the whole
    // cgroup must not end the helper before the server it cleans up after.
    let _signals = Signals::new().context("setting up signal handling")?;
    let undone =
        warren_net::undo_when_stdin_closes(pid, Path::new(warren_net::DEFAULT_JOURNAL_DIR))
            .with_context(|| format!("undoing the NAT of warren server {pid}"))?;
    for u in undone {
        info!("NAT helper: undone {u}");
    }
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

/// A VPN network that overlaps a network the server is already on breaks routing both ways
/// (the kernel has two routes for the same addresses; clients cannot reach the LAN, or the
/// LAN loses the server), so it is refused before anything is set up. `dev` (a leftover tun
/// of this server's own name) is not counted.
fn refuse_overlapping_network(network: Ipv4Addr, netmask: Ipv4Addr, dev: &str) -> Result<()> {
    let addrs = match warren_io::ipv4_interface_addrs() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("cannot list the interface addresses to check the VPN network: {e}");
            return Ok(());
        }
    };
    let vpn_prefix = u32::from(netmask).count_ones() as u8;
    if let Some(clash) = overlapping_interface(network, vpn_prefix, dev, &addrs) {
        return Err(Error::NetworkOverlap {
            network,
            prefix: vpn_prefix,
            clash: clash.clone(),
        });
    }
    Ok(())
}

fn overlapping_interface<'a>(
    network: Ipv4Addr,
    prefix: u8,
    dev: &str,
    addrs: &'a [warren_io::InterfaceAddr],
) -> Option<&'a warren_io::InterfaceAddr> {
    let mask = |p: u8| {
        if p == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(p.min(32)))
        }
    };
    addrs.iter().find(|a| {
        if a.interface == dev || a.addr.is_loopback() {
            return false;
        }
        let m = mask(prefix.min(a.prefix));
        u32::from(network) & m == u32::from(a.addr) & m
    })
}

/// [`engine_config`] with the CRL in force (`crl-verify`), remembering the TLS inputs so the
/// CRL watcher can rebuild the TLS configuration without reading the key again.
fn live_engine_config(
    cfg: &warren_config::ServerConfig,
    unix_time_at_zero: u64,
    live: &crate::crl::SharedTls,
) -> Result<ServerConfig> {
    let mut live = live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut inputs = tls_inputs(cfg)?;
    inputs.opts.crl = live.crl.clone();
    let tls = inputs.build()?;
    let engine = engine_config_with(cfg, unix_time_at_zero, tls)?;
    live.inputs = Some(inputs);
    Ok(engine)
}

/// The engine's config from the lowered one (without a CRL): types only, every default and
/// derived value comes from warren-config.
pub fn engine_config(
    cfg: &warren_config::ServerConfig,
    unix_time_at_zero: u64,
) -> Result<ServerConfig> {
    let tls = tls_inputs(cfg)?.build()?;
    engine_config_with(cfg, unix_time_at_zero, tls)
}

/// `ca`, `cert`, `key` and the TLS options of `cfg` (without the CRL).
fn tls_inputs(cfg: &warren_config::ServerConfig) -> Result<crate::crl::TlsInputs> {
    let ca = cfg.ca.load().context("reading `ca`")?;
    let cert = cfg.cert.load().context("reading `cert`")?;
    let key = zeroize::Zeroizing::new(cfg.key.load().context("reading `key`")?);
    let tls_opts = ServerTlsOptions {
        min_version: cfg.tls_version_min.map(tls_version),
        max_version: cfg.tls_version_max.map(tls_version),
        remote_cert_tls: cfg.remote_cert_tls.map(cert_role),
        verify_x509_name: cfg
            .verify_x509_name
            .as_ref()
            .map(|(n, t)| (n.clone(), x509_match(*t))),
        client_cert: match cfg.client_cert() {
            warren_config::VerifyClientCert::None => ClientCertMode::None,
            warren_config::VerifyClientCert::Optional => ClientCertMode::Optional,
            warren_config::VerifyClientCert::Require => ClientCertMode::Require,
        },
        algorithms: tls_algorithms(
            cfg.tls_groups.as_deref(),
            cfg.tls_cipher.as_deref(),
            cfg.tls_ciphersuites.as_deref(),
        ),
        crl: None,
        revoked_serial: cfg
            .crl_verify_dir
            .as_ref()
            .map(|(dir, _)| crate::crl::serial_dir(dir)),
    };
    Ok(crate::crl::TlsInputs {
        ca,
        cert,
        key,
        opts: tls_opts,
    })
}

fn engine_config_with(
    cfg: &warren_config::ServerConfig,
    unix_time_at_zero: u64,
    tls: Arc<rustls::ServerConfig>,
) -> Result<ServerConfig> {
    let s = cfg.session();
    Ok(ServerConfig {
        tls,
        wrap: {
            let wrap = wrap_config(
                cfg.tls_crypt.as_ref(),
                cfg.tls_auth.as_ref(),
                cfg.hmac_digest(),
            )?;
            match &cfg.tls_crypt_v2 {
                Some(v2) => tls_crypt_v2_server(v2, wrap)?,
                None => wrap,
            }
        },
        network: cfg.server.0,
        netmask: cfg.server.1,
        topology: match cfg.topology {
            warren_config::Topology::Subnet => warren_openvpn::pool::Topology::Subnet,
            warren_config::Topology::Net30 => warren_openvpn::pool::Topology::Net30,
            warren_config::Topology::P2p => warren_openvpn::pool::Topology::P2p,
        },
        ipv6: cfg.ipv6().map(|v| warren_openvpn::TunnelIpv6 {
            local: v.local.addr,
            netbits: v.local.len,
            pool: v.pool_base().map(|base| (base, v.pool_size())),
            push_tun_ipv6: v.push_tun_ipv6,
        }),
        block_ipv6: cfg.block_ipv6_from(),
        push: cfg.push.clone(),
        ping: s.ping,
        ping_restart: s.ping_restart,
        push_ping: s.push_ping,
        push_ping_restart: s.push_ping_restart,
        data_ciphers: data_ciphers(&cfg.data_ciphers, cfg.auth.as_deref())?,
        data_ciphers_fallback: cfg
            .fallback_cipher()
            .map(|n| cipher_with_auth(n, cfg.auth.as_deref()))
            .transpose()?,
        reneg: s.reneg,
        hand_window: s.hand_window,
        tls_timeout: s.tls_timeout,
        client_to_client: cfg.client_to_client,
        duplicate_cn: cfg.duplicate_cn,
        max_clients: usize::try_from(cfg.client_limit()).unwrap_or(usize::MAX),
        half_open: HalfOpenLimits {
            per_source: usize::try_from(cfg.half_open_per_source()).unwrap_or(usize::MAX),
            total: usize::try_from(cfg.half_open_limit()).unwrap_or(usize::MAX),
        },
        explicit_exit_notify: s.explicit_exit_notify,
        tun_mtu: s.tun_mtu,
        mssfix: s.mssfix,
        key_derivation: key_derivation(cfg.key_derivation),
        // The user database and the management client (`management-client-auth`) decide
        // logins off the packet loop.
        external_auth: cfg.state.is_some()
            || cfg.client_config_dir.is_some()
            || cfg.management.as_ref().is_some_and(|m| m.client_auth)
            || cfg.scripts.decide_logins(),
        unix_time_at_zero,
    })
}

/// Threads running `auth-user-pass-verify` and `client-connect` at once (each waits on its
/// script; more logins queue).
const SCRIPT_THREADS: usize = 32;

/// Connections beyond `max-clients` a TCP listener accepts (handshakes in progress,
/// clients reconnecting before their old connection is gone).
const TCP_EXTRA_CONNECTIONS: usize = 64;
/// Connections at once from one source address (a NAT gateway may carry several users).
const TCP_MAX_PER_SOURCE: usize = 32;

/// Non-OpenVPN connections relayed at once by `port-share` (each holds two descriptors
/// and two 16 KiB buffers).
const PORT_SHARE_MAX_CONNECTIONS: usize = 256;

/// `port-share HOST PORT`: HOST resolved once at start-up, IPv4 only as in OpenVPN
/// (ps.c resolves with AF_INET).
fn port_share_target(cfg: &warren_config::ServerConfig) -> Result<Option<std::net::SocketAddr>> {
    let Some((host, port)) = &cfg.port_share else {
        return Ok(None);
    };
    let addr = (host.as_str(), *port)
        .to_socket_addrs()
        .with_context(|| format!("port-share: resolving {host}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| Error::PortShareNoIpv4(host.clone()))?;
    info!("port-share: non-OpenVPN connections are relayed to {addr}");
    Ok(Some(addr))
}

/// The TCP listeners: `proto tcp-server` on `port`, and each `warren-listen tcp PORT`,
/// bound like the main socket (`local`; the address family of `proto`).
fn tcp_listeners(cfg: &warren_config::ServerConfig) -> Result<Vec<warren_io::TcpListener>> {
    use warren_config::Proto;
    let family = match cfg.proto {
        Proto::Udp | Proto::TcpServer => UdpFamily::Any,
        Proto::Udp4 | Proto::Tcp4Server => UdpFamily::V4,
        Proto::Udp6 | Proto::Tcp6Server => UdpFamily::V6,
    };
    let local = match cfg.local.as_deref() {
        None => None,
        Some(s) => Some(resolve_local(s, family)?),
    };
    let mut ports = Vec::new();
    if cfg.proto.is_tcp() {
        ports.push(cfg.port);
    }
    for p in &cfg.tcp_listen {
        if !ports.contains(p) {
            ports.push(*p);
        }
    }
    ports
        .into_iter()
        .map(|port| {
            warren_io::TcpListener::bind(&warren_io::TcpBind {
                family,
                local,
                port,
            })
            .context("opening the TCP listener")
        })
        .collect()
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
        warren_config::Proto::TcpServer
        | warren_config::Proto::Tcp4Server
        | warren_config::Proto::Tcp6Server => {
            return Err(Error::NoUdpSocket);
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
        .ok_or_else(|| Error::LocalFamily(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_masqueraded_only_when_clients_send_it_here() {
        let p = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(pushes_ipv6_gateway(&p(&["redirect-gateway def1 ipv6"])));
        assert!(pushes_ipv6_gateway(&p(&[
            "route 10.0.0.0",
            "redirect-gateway ipv6 !ipv4"
        ])));
        assert!(!pushes_ipv6_gateway(&p(&["redirect-gateway def1"])));
        assert!(!pushes_ipv6_gateway(&p(&[
            "route-ipv6 2000::/3",
            "dhcp-option DNS6 ::1"
        ])));
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn vpn_network_overlaps() {
        let addr = |i: &str, a: [u8; 4], p| warren_io::InterfaceAddr {
            interface: i.into(),
            addr: Ipv4Addr::from(a),
            prefix: p,
        };
        let host = [
            addr("lo", [127, 0, 0, 1], 8),
            addr("eth0", [192, 168, 1, 20], 24),
            addr("wg0", [10, 0, 0, 1], 16),
            addr("tunold", [10, 8, 0, 1], 24),
        ];
        let net = |a: [u8; 4]| Ipv4Addr::from(a);
        assert!(overlapping_interface(net([10, 8, 0, 0]), 24, "tunold", &host).is_none());
        let c = overlapping_interface(net([10, 8, 0, 0]), 24, "tun0", &host).unwrap();
        assert_eq!(c.interface, "tunold");
        // The VPN network inside the LAN, and the LAN inside the VPN network.
        assert_eq!(
            overlapping_interface(net([192, 168, 1, 128]), 25, "tun0", &host)
                .unwrap()
                .interface,
            "eth0"
        );
        assert_eq!(
            overlapping_interface(net([10, 0, 0, 0]), 8, "tunold", &host)
                .unwrap()
                .interface,
            "wg0"
        );
        assert!(overlapping_interface(net([10, 1, 0, 0]), 24, "tunold", &host).is_none());
        assert!(overlapping_interface(net([172, 16, 0, 0]), 12, "tun0", &host).is_none());
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
        assert!(udp_bind(Proto::TcpServer, None, 1194, None, None).is_err());
        assert_eq!(
            resolve_local("localhost", UdpFamily::V4).expect("resolves"),
            IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
        );
    }
}
