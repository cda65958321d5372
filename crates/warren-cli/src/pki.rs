//! `warren pki`: the built-in certificate authority.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use warren_pki::easyrsa::{self, ImportOptions};
use warren_pki::{
    CertKind, KeyAlgorithm, LeafOptions, Pki, RevocationReason, Serial, validate_name,
};
use warren_store::{CertFilter, CertRecord, ImportBatch, NewUser, Revocation, Store};

use warren_server::state::{
    Layout, StateOptions, begin_import, ensure_state, finish_import, fmt_date, open_state,
    open_state_for_reading, open_store, wall_now, write_atomic,
};

use crate::args::{StateDirArg, fmt_rfc3339, parse_algo, with_spinner};

/// `warren pki ...`
#[derive(Debug, Args)]
pub struct PkiArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    #[command(subcommand)]
    pub command: PkiCommand,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the CA, the server certificate and the tls-crypt key (what `warren server` does
    /// on its first run). Does nothing if they exist.
    Init(InitArgs),
    /// Issue a server or client certificate.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// Revoke every valid certificate of NAME (or one, with --serial). Running servers refuse
    /// it at once; pki/crl.pem is rewritten.
    Revoke(RevokeArgs),
    /// Issue a fresh certificate and key for NAME (default: this server's certificate).
    Renew(RenewArgs),
    /// List certificates with their expiry and status.
    List(ListArgs),
    /// Write a fresh CRL to pki/crl.pem and print it.
    Crl(CrlArgs),
    /// Import an easy-rsa PKI (its CA, issued certificates and keys, and revocations) into a
    /// state directory that has no CA yet.
    Import(ImportArgs),
    /// Make a key file as `openvpn --genkey` does: tls-crypt-v2-server, tls-crypt-v2-client
    /// (with --server-key), tls-crypt. Not tied to the state directory.
    Genkey(crate::genkey::GenkeyArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Key type of the CA and the server certificate: ecdsa-p256 (default), ecdsa-p384,
    /// rsa2048, rsa3072, rsa4096, ed25519.
    #[arg(long, value_name = "ALGO", value_parser = parse_algo, default_value = "ecdsa-p256")]
    pub algo: KeyAlgorithm,
    /// The CA's common name (default: "warren CA" and a random tag).
    #[arg(long, value_name = "NAME")]
    pub ca_name: Option<String>,
    /// The server certificate's common name (also its DNS name).
    #[arg(long, value_name = "NAME", default_value = "server")]
    pub server_name: String,
    /// Lifetime of the CA in days.
    #[arg(long, value_name = "DAYS", default_value_t = warren_pki::DEFAULT_CA_DAYS)]
    pub ca_days: u32,
    /// Lifetime of the server certificate in days.
    #[arg(long, value_name = "DAYS", default_value_t = warren_pki::DEFAULT_LEAF_DAYS)]
    pub days: u32,
}

/// Options of a newly issued leaf certificate.
#[derive(Debug, Clone, Args)]
pub struct LeafArgs {
    /// Key type (default: the CA's own type).
    #[arg(long, value_name = "ALGO", value_parser = parse_algo)]
    pub algo: Option<KeyAlgorithm>,
    /// Lifetime in days.
    #[arg(long, value_name = "DAYS", default_value_t = warren_pki::DEFAULT_LEAF_DAYS)]
    pub days: u32,
}

impl LeafArgs {
    pub fn options(&self, ca: &Pki) -> LeafOptions {
        LeafOptions {
            algorithm: self.algo.or(ca.info().key_algorithm).unwrap_or_default(),
            days: self.days,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum IssueCommand {
    /// A server certificate (EKU serverAuth, SAN DNS:NAME).
    Server {
        name: String,
        #[command(flatten)]
        leaf: LeafArgs,
        /// Make it this server's certificate (pki/server.crt and pki/server.key).
        #[arg(long)]
        install: bool,
        /// Also write NAME.crt and NAME.key (0600) into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// A client certificate whose common name is NAME (EKU clientAuth). Creates the user NAME
    /// (without password) if it does not exist.
    Client {
        name: String,
        #[command(flatten)]
        leaf: LeafArgs,
        /// Also write NAME.crt and NAME.key (0600) into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The common name (user or server name).
    #[arg(required_unless_present = "serial")]
    pub name: Option<String>,
    /// Revoke only the certificate with this serial (hex).
    #[arg(long, value_name = "HEX")]
    pub serial: Option<String>,
    /// RFC 5280 reason: unspecified, keyCompromise, affiliationChanged, superseded,
    /// cessationOfOperation, ...
    #[arg(long, value_name = "REASON")]
    pub reason: Option<RevocationReason>,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The certificate to renew: a client name, or the server's name. Default: this server's
    /// certificate.
    pub name: Option<String>,
    #[command(flatten)]
    pub leaf: LeafArgs,
    /// Revoke the previous certificate(s) of NAME (reason superseded).
    #[arg(long)]
    pub revoke_old: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only certificates of this common name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct CrlArgs {
    /// Days until the CRL's nextUpdate.
    #[arg(long, value_name = "DAYS", default_value_t = warren_pki::DEFAULT_CRL_DAYS)]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The easy-rsa directory (the `pki/` directory or its parent).
    pub dir: PathBuf,
    /// The CA key, if not pki/private/ca.key (for example a decrypted copy).
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
    /// Which imported server certificate this server uses (default: the one named `server`,
    /// else the only one; with none, a new one is issued).
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
}

pub fn run(args: PkiArgs) -> Result<()> {
    let dir = &args.state.state_dir;
    match args.command {
        PkiCommand::Init(a) => init(dir, a),
        PkiCommand::Issue(cmd) => issue(dir, cmd),
        PkiCommand::Revoke(a) => revoke(dir, a),
        PkiCommand::Renew(a) => renew(dir, a),
        PkiCommand::List(a) => list(dir, a),
        PkiCommand::Crl(a) => {
            let state = open_state(dir)?;
            let crl = state.write_crl_days(wall_now(), a.days)?;
            print!("{crl}");
            Ok(())
        }
        PkiCommand::Import(a) => import(dir, a),
        PkiCommand::Genkey(a) => crate::genkey::run(a),
    }
}

fn init(dir: &std::path::Path, a: InitArgs) -> Result<()> {
    if let Some(n) = &a.ca_name
        && (n.is_empty() || n.len() > warren_pki::MAX_COMMON_NAME_LEN)
    {
        bail!("--ca-name must be 1 to 64 bytes");
    }
    validate_name(&a.server_name).with_context(|| format!("--server-name {:?}", a.server_name))?;
    let opts = StateOptions {
        ca: warren_pki::CaOptions {
            common_name: a.ca_name.unwrap_or_default(),
            algorithm: a.algo,
            days: a.ca_days,
        },
        server_name: a.server_name,
        server: LeafOptions {
            algorithm: a.algo,
            days: a.days,
        },
    };
    let state = ensure_state(dir, &opts)?;
    if state.created.is_empty() {
        eprintln!(
            "{} is already initialised (CA \"{}\"); nothing to do",
            dir.display(),
            state.pki.info().common_name
        );
    } else {
        for line in &state.created {
            eprintln!("created {line}");
        }
    }
    Ok(())
}

fn write_out(out: &std::path::Path, name: &str, cert: &str, key: &str) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_atomic(&out.join(format!("{name}.crt")), cert.as_bytes(), 0o644)?;
    write_atomic(&out.join(format!("{name}.key")), key.as_bytes(), 0o600)?;
    eprintln!("wrote {0}/{name}.crt and {0}/{name}.key", out.display());
    Ok(())
}

fn issue(dir: &std::path::Path, cmd: IssueCommand) -> Result<()> {
    let mut state = open_state(dir)?;
    let now = wall_now();
    match cmd {
        IssueCommand::Server {
            name,
            leaf,
            install,
            out,
        } => {
            let opts = leaf.options(&state.pki);
            let mut rng = warren_io::OsRng::new()?;
            let issued = with_spinner(
                &format!("generating a {} key", opts.algorithm),
                opts.algorithm.is_slow(),
                || state.pki.issue_server(&name, &opts, now, &mut rng),
            )?;
            if install {
                state.install_server(&issued)?;
                eprintln!("installed as this server's certificate (restart the server to use it)");
            } else {
                state.store.add_cert(&CertRecord::from_issued(&issued))?;
            }
            if let Some(out) = out {
                write_out(&out, &name, &issued.cert_pem, issued.key_pem.as_str())?;
            }
            eprintln!(
                "issued server certificate {} for \"{name}\", valid until {}",
                issued.info.serial,
                fmt_date(issued.info.not_after)
            );
        }
        IssueCommand::Client { name, leaf, out } => {
            validate_name(&name).with_context(|| format!("invalid name {name:?}"))?;
            let opts = leaf.options(&state.pki);
            let issued = state.issue_client(&name, &opts, now)?;
            let rec = CertRecord::from_issued(&issued);
            if state.store.user(&name)?.is_none() {
                state
                    .store
                    .add_user(&NewUser::named(&name), Some(&rec), now)?;
                eprintln!("created user \"{name}\" (no password)");
            } else {
                state.store.add_cert(&rec)?;
            }
            if let Some(out) = out {
                write_out(&out, &name, &issued.cert_pem, issued.key_pem.as_str())?;
            }
            eprintln!(
                "issued client certificate {} for \"{name}\", valid until {}",
                issued.info.serial,
                fmt_date(issued.info.not_after)
            );
        }
    }
    Ok(())
}

fn revoke(dir: &std::path::Path, a: RevokeArgs) -> Result<()> {
    let state = open_state(dir)?;
    let now = wall_now();
    let targets: Vec<CertRecord> = match (&a.serial, &a.name) {
        (Some(s), name) => {
            let serial: Serial = s.parse().with_context(|| format!("--serial {s:?}"))?;
            let Some(c) = state.store.cert(&serial)? else {
                bail!("no certificate with serial {serial} (see `warren pki list`)");
            };
            if let Some(n) = name
                && &c.common_name != n
            {
                bail!(
                    "certificate {serial} belongs to {:?}, not {n:?}",
                    c.common_name
                );
            }
            vec![c]
        }
        (None, Some(name)) => state
            .store
            .certs(&CertFilter {
                common_name: Some(name.clone()),
                unrevoked_only: true,
                ..Default::default()
            })?
            .into_iter()
            .filter(|c| c.kind != CertKind::Ca)
            .collect(),
        (None, None) => bail!("give a NAME or --serial"),
    };
    if targets.is_empty() {
        bail!(
            "{} has no unrevoked certificate (see `warren pki list`)",
            a.name.as_deref().unwrap_or("?")
        );
    }
    let server_serial =
        warren_pki::inspect_pem(&state.server_cert_pem, "server certificate")?.serial;
    for c in &targets {
        if c.kind == CertKind::Ca {
            bail!("refusing to revoke the CA certificate itself");
        }
        if state.store.revoke(&c.serial, now, a.reason)? {
            eprintln!(
                "revoked {} certificate {} of \"{}\"",
                c.kind, c.serial, c.common_name
            );
        } else {
            eprintln!("certificate {} was already revoked", c.serial);
        }
        if c.serial == server_serial {
            eprintln!(
                "warning: that is this server's own certificate; issue a new one with `warren pki renew`"
            );
        }
    }
    state.write_crl(now)?;
    Ok(())
}

fn renew(dir: &std::path::Path, a: RenewArgs) -> Result<()> {
    let mut state = open_state(dir)?;
    let now = wall_now();
    let server_info = warren_pki::inspect_pem(&state.server_cert_pem, "server certificate")?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| server_info.common_name.clone());
    let opts = a.leaf.options(&state.pki);
    let old = state.store.certs(&CertFilter {
        common_name: Some(name.clone()),
        unrevoked_only: true,
        ..Default::default()
    })?;
    let is_server = a.name.is_none() || name == server_info.common_name;
    let issued = if is_server {
        let mut rng = warren_io::OsRng::new()?;
        let issued = with_spinner(
            &format!("generating a {} key", opts.algorithm),
            opts.algorithm.is_slow(),
            || state.pki.issue_server(&name, &opts, now, &mut rng),
        )?;
        state.install_server(&issued)?;
        eprintln!("installed the new server certificate (restart the server to use it)");
        issued
    } else {
        if state.store.user(&name)?.is_none() && old.is_empty() {
            bail!("no user or certificate named {name:?}");
        }
        let issued = state.issue_client(&name, &opts, now)?;
        state.store.add_cert(&CertRecord::from_issued(&issued))?;
        eprintln!("export the new profile with `warren profile export {name}`");
        issued
    };
    eprintln!(
        "issued certificate {} for \"{name}\", valid until {}",
        issued.info.serial,
        fmt_date(issued.info.not_after)
    );
    if a.revoke_old {
        for c in old.iter().filter(|c| c.kind != CertKind::Ca) {
            state
                .store
                .revoke(&c.serial, now, Some(RevocationReason::Superseded))?;
            eprintln!("revoked the previous certificate {}", c.serial);
        }
        state.write_crl(now)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct CertView {
    serial: String,
    common_name: String,
    kind: &'static str,
    status: &'static str,
    not_before: String,
    not_after: String,
    revoked_at: Option<String>,
    reason: Option<&'static str>,
    has_key: bool,
}

fn list(dir: &std::path::Path, a: ListArgs) -> Result<()> {
    let state = open_state_for_reading(dir)?;
    let now = wall_now();
    let mut certs = state.store.certs(&CertFilter {
        common_name: a.name.clone(),
        ..Default::default()
    })?;
    certs.sort_by(|x, y| {
        (x.kind, &x.common_name, y.not_before).cmp(&(y.kind, &y.common_name, x.not_before))
    });
    let server_serial =
        warren_pki::inspect_pem(&state.server_cert_pem, "server certificate")?.serial;
    let views: Vec<CertView> = certs
        .iter()
        .map(|c| CertView {
            serial: c.serial.to_string(),
            common_name: c.common_name.clone(),
            kind: c.kind.as_str(),
            status: c.status_at(now),
            not_before: fmt_rfc3339(c.not_before),
            not_after: fmt_rfc3339(c.not_after),
            revoked_at: c.revoked.map(|r| fmt_rfc3339(r.at)),
            reason: c.revoked.and_then(|r| r.reason).map(|r| r.as_str()),
            has_key: c.key_pem.is_some() || c.kind == CertKind::Ca || c.serial == server_serial,
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    let rows: Vec<[String; 5]> = certs
        .iter()
        .zip(&views)
        .map(|(c, v)| {
            let mut status = v.status.to_owned();
            if let Some(r) = &c.revoked {
                status = format!("revoked {}", fmt_date(r.at));
                if let Some(reason) = r.reason {
                    status.push_str(&format!(" ({reason})"));
                }
            }
            if c.serial == server_serial {
                status.push_str(", in use by this server");
            }
            [
                v.kind.to_owned(),
                v.common_name.clone(),
                fmt_date(c.not_after),
                status,
                v.serial.clone(),
            ]
        })
        .collect();
    print_table(&["KIND", "NAME", "EXPIRES", "STATUS", "SERIAL"], &rows);
    Ok(())
}

/// Prints a left-aligned table with two spaces between columns.
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn import(dir: &std::path::Path, a: ImportArgs) -> Result<()> {
    let layout = Layout::new(dir);
    let pki = easyrsa::import(
        &a.dir,
        &ImportOptions {
            ca_key: a.ca_key.clone(),
        },
    )?;
    for w in &pki.warnings {
        eprintln!("warning: {w}");
    }
    let now = wall_now();
    // Exclusive, and only into a directory without state (marks the import as in progress).
    let lock = begin_import(dir)?;

    // Which certificate becomes this server's.
    let servers: Vec<_> = pki
        .certs
        .iter()
        .filter(|c| {
            c.info.server_auth && c.key_pem.is_some() && pki.revocation(&c.info.serial).is_none()
        })
        .collect();
    let chosen = match &a.server {
        Some(n) => Some(
            servers
                .iter()
                .find(|c| &c.info.common_name == n)
                .copied()
                .with_context(|| {
                    format!("no valid server certificate with key named {n:?} in the import")
                })?,
        ),
        None => servers
            .iter()
            .find(|c| c.info.common_name == "server")
            .or_else(|| {
                if servers.len() == 1 {
                    servers.first()
                } else {
                    None
                }
            })
            .copied(),
    };
    if a.server.is_none() && chosen.is_none() && servers.len() > 1 {
        let names: Vec<&str> = servers
            .iter()
            .map(|c| c.info.common_name.as_str())
            .collect();
        bail!(
            "several server certificates ({}); choose one with --server NAME",
            names.join(", ")
        );
    }

    // The database first (it is harmless without the CA files), then the CA files: the CA
    // certificate is what marks the import as done.
    let store = open_store(&layout)?;
    let mut batch = ImportBatch::default();
    for c in &pki.certs {
        let mut rec = CertRecord::from_info(&c.info, Some(c.cert_pem.clone()));
        rec.key_pem = c.key_pem.clone();
        batch.certs.push(rec);
        if c.info.kind == CertKind::Client
            && validate_name(&c.info.common_name).is_ok()
            && !batch.users.iter().any(|u| u.name == c.info.common_name)
            && pki.revocation(&c.info.serial).is_none()
        {
            batch.users.push(NewUser::named(&c.info.common_name));
        }
    }
    for r in &pki.revoked {
        batch.revocations.push((
            r.revoked.serial.clone(),
            r.common_name.clone(),
            Revocation {
                at: r.revoked.revoked_at,
                reason: r.revoked.reason,
            },
        ));
    }
    let summary = store.import(&batch, now)?;
    if let Some(c) = chosen
        && let Some(key) = &c.key_pem
    {
        write_atomic(&layout.server_key(), key.as_str().as_bytes(), 0o600)?;
        write_atomic(&layout.server_crt(), c.cert_pem.as_bytes(), 0o644)?;
        eprintln!(
            "this server uses the imported certificate \"{}\"",
            c.info.common_name
        );
    }
    write_atomic(
        &layout.ca_key(),
        pki.ca.key_pem().as_str().as_bytes(),
        0o600,
    )?;
    write_atomic(&layout.ca_crt(), pki.ca.cert_pem().as_bytes(), 0o644)?;
    drop(store);

    // Completes the state (server certificate if none was imported, tls-crypt key, CRL).
    let state = finish_import(dir, &lock)?;
    state.write_crl(now)?;
    for line in state
        .created
        .iter()
        .filter(|l| !l.starts_with("state directory"))
    {
        eprintln!("created {line}");
    }
    eprintln!(
        "imported CA \"{}\" from {}: {} certificates ({} revoked), {} users",
        pki.ca.info().common_name,
        pki.dir.display(),
        summary.certs_added,
        pki.revoked.len(),
        summary.users_added
    );
    Ok(())
}
