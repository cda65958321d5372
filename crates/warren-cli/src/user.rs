//! `warren user`: VPN users (password, fixed address, routes, expiry, enabled, own networks
//! and pushes).

use std::io::{BufRead, IsTerminal};
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ipnet::IpNet;
use serde::Serialize;
use warren_pki::validate_name;
use warren_store::{
    CertFilter, CertRecord, NewUser, RateLimitConfig, Store, User, UserChange, UserSite, password,
};
use zeroize::Zeroizing;

use warren_server::state::{
    StateOptions, ensure_state, fmt_date, open_state, open_state_for_reading, wall_now,
};

use crate::args::{StateDirArg, fmt_rfc3339, parse_date};
use crate::pki::{LeafArgs, print_table};

/// `warren user ...`
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user and issue their client certificate. Asks for a password unless
    /// --no-password or --password-stdin.
    Add(AddArgs),
    /// List users.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one user, their certificates and address lease.
    Show {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set or remove a user's password.
    Passwd {
        name: String,
        #[command(flatten)]
        pw: PasswordArgs,
        /// Remove the password (certificate-only user).
        #[arg(long, conflicts_with_all = ["password_stdin", "no_password"])]
        clear: bool,
    },
    /// Change a user's fixed address, routes, expiry, access rules or groups.
    #[command(long_about = format!(
        "Change a user's fixed address, routes, expiry, access rules or groups.\n\n{}",
        crate::access::RULES_HELP
    ))]
    Set(SetArgs),
    /// Refuse the user from now on; running servers drop their sessions.
    Disable { name: String },
    /// Allow a disabled user again.
    Enable { name: String },
    /// Delete a user: their certificates are revoked and their lease released.
    Del { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// No password (certificate-only user).
    #[arg(long, conflicts_with = "password_stdin")]
    pub no_password: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub name: String,
    #[command(flatten)]
    pub pw: PasswordArgs,
    /// The VPN address this user always gets.
    #[arg(long, value_name = "IP")]
    pub fixed_ip: Option<Ipv4Addr>,
    /// An extra route pushed to this user (repeatable), e.g. 192.168.10.0/24.
    #[arg(long = "route", value_name = "CIDR")]
    pub routes: Vec<IpNet>,
    /// Refuse the user from this date on (YYYY-MM-DD, UTC).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub expires: Option<std::time::SystemTime>,
    /// Do not issue a client certificate (password-only user).
    #[arg(long)]
    pub no_cert: bool,
    #[command(flatten)]
    pub leaf: LeafArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    pub name: String,
    /// Give the user this fixed VPN address.
    #[arg(long, value_name = "IP", conflicts_with = "no_fixed_ip")]
    pub fixed_ip: Option<Ipv4Addr>,
    /// Remove the fixed address (use the pool).
    #[arg(long)]
    pub no_fixed_ip: bool,
    /// Replace the pushed routes (repeatable).
    #[arg(long = "route", value_name = "CIDR", conflicts_with = "clear_routes")]
    pub routes: Vec<IpNet>,
    /// Remove all extra routes.
    #[arg(long)]
    pub clear_routes: bool,
    /// Expiry date (YYYY-MM-DD, UTC).
    #[arg(long, value_name = "DATE", value_parser = parse_date, conflicts_with = "no_expiry")]
    pub expires: Option<std::time::SystemTime>,
    /// Remove the expiry.
    #[arg(long)]
    pub no_expiry: bool,
    #[command(flatten)]
    pub site: SiteArgs,
    #[command(flatten)]
    pub access: crate::access::AccessArgs,
    #[command(flatten)]
    pub membership: crate::access::MembershipArgs,
}

/// A user's own networks and pushes (site-to-site): `warren user set NAME --subnet ...`.
#[derive(Debug, Args)]
pub struct SiteArgs {
    /// A network behind this user's client, IPv4 or IPv6 (repeatable; replaces the list),
    /// e.g. 192.168.50.0/24: the server routes it to this client (and into its tun), and
    /// accepts it as the client's source addresses.
    #[arg(long = "subnet", value_name = "CIDR", conflicts_with = "no_subnets")]
    pub subnets: Vec<IpNet>,
    /// Remove all of the user's networks.
    #[arg(long)]
    pub no_subnets: bool,
    /// An option pushed to this user only (repeatable; replaces the list), e.g.
    /// --push "route 192.168.1.0 255.255.255.0".
    #[arg(long = "push", value_name = "OPTION", conflicts_with = "no_push")]
    pub push: Vec<String>,
    /// Remove all of the user's own pushes.
    #[arg(long)]
    pub no_push: bool,
}

impl SiteArgs {
    /// The user's new site, from `old`; `None` when no site flag was given.
    fn apply(&self, old: &UserSite) -> Result<Option<UserSite>> {
        if self.subnets.is_empty() && !self.no_subnets && self.push.is_empty() && !self.no_push {
            return Ok(None);
        }
        let mut site = old.clone();
        if self.no_subnets {
            site.subnets.clear();
        } else if !self.subnets.is_empty() {
            for n in &self.subnets {
                if n.trunc() != *n {
                    bail!(
                        "--subnet {n}: host bits are set; did you mean {}?",
                        n.trunc()
                    );
                }
            }
            site.subnets = self.subnets.clone();
        }
        if self.no_push {
            site.push.clear();
        } else if !self.push.is_empty() {
            for p in &self.push {
                let p = p.trim();
                if p.is_empty() || p.len() > 255 || p.contains(['\n', '\r']) {
                    bail!(
                        "--push {p:?}: expected one option of at most 255 characters on one line"
                    );
                }
                let first = p.split_ascii_whitespace().next().unwrap_or("");
                if matches!(first, "comp-lzo" | "compress") {
                    bail!("--push {p:?}: compression is refused (VORACLE)");
                }
            }
            site.push = self.push.iter().map(|p| p.trim().to_owned()).collect();
        }
        Ok(Some(site))
    }
}

pub fn run(args: UserArgs) -> Result<()> {
    let dir = &args.state.state_dir;
    match args.command {
        UserCommand::Add(a) => add(dir, a),
        UserCommand::List { json } => list(dir, json),
        UserCommand::Show { name, json } => show(dir, &name, json),
        UserCommand::Passwd { name, pw, clear } => {
            let state = open_state(dir)?;
            let hash = if clear || pw.no_password {
                None
            } else {
                Some(read_and_hash(&name, pw.password_stdin)?)
            };
            let had = hash.is_some();
            state.store.update_user(
                &name,
                &UserChange {
                    password_hash: Some(hash),
                    ..Default::default()
                },
            )?;
            eprintln!(
                "{} the password of \"{name}\"",
                if had { "changed" } else { "removed" }
            );
            Ok(())
        }
        UserCommand::Set(a) => set(dir, a),
        UserCommand::Disable { name } => set_enabled(dir, &name, false),
        UserCommand::Enable { name } => set_enabled(dir, &name, true),
        UserCommand::Del { name } => {
            let state = open_state(dir)?;
            let now = wall_now();
            let d = state.store.delete_user(&name, now)?;
            state.write_crl(now)?;
            eprintln!(
                "deleted user \"{name}\" ({} certificate(s) revoked{})",
                d.revoked.len(),
                if d.lease_released {
                    ", address lease released"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}

/// Asks for (twice, on a terminal) or reads (stdin) a password and hashes it.
fn read_and_hash(name: &str, from_stdin: bool) -> Result<String> {
    let pw = if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        if !std::io::stdin().is_terminal() {
            bail!(
                "no terminal to ask for the password of {name:?}: pass --password-stdin (and \
                 the password on standard input) or --no-password"
            );
        }
        let a = Zeroizing::new(
            rpassword::prompt_password(format!("Password for {name}: "))
                .context("reading the password")?,
        );
        let b =
            Zeroizing::new(rpassword::prompt_password("Again: ").context("reading the password")?);
        if a != b {
            bail!("the passwords differ; nothing changed");
        }
        a
    };
    if pw.is_empty() {
        bail!("empty password; use --no-password for a certificate-only user");
    }
    if pw.chars().count() < 8 {
        eprintln!("warning: the password is shorter than 8 characters");
    }
    let mut rng = warren_io::OsRng::new().context("getrandom")?;
    Ok(password::hash(&pw, &mut rng)?)
}

fn add(dir: &Path, a: AddArgs) -> Result<()> {
    validate_name(&a.name).with_context(|| format!("invalid user name {:?}", a.name))?;
    if a.no_cert && a.pw.no_password {
        bail!("a user needs a certificate or a password (drop --no-cert or --no-password)");
    }
    let state = ensure_state(dir, &StateOptions::default())?;
    for line in &state.created {
        eprintln!("created {line}");
    }
    if state.store.user(&a.name)?.is_some() {
        bail!("user {:?} already exists", a.name);
    }
    let hash = if a.pw.no_password {
        None
    } else {
        Some(read_and_hash(&a.name, a.pw.password_stdin)?)
    };
    let now = wall_now();
    let user = NewUser {
        name: a.name.clone(),
        password_hash: hash,
        enabled: true,
        expires_at: a.expires,
        fixed_ip: a.fixed_ip,
        routes: a.routes,
    };
    let issued = if a.no_cert {
        None
    } else {
        Some(state.issue_client(&a.name, &a.leaf.options(&state.pki), now)?)
    };
    let rec = issued.as_ref().map(CertRecord::from_issued);
    state.store.add_user(&user, rec.as_ref(), now)?;
    let mut what = vec![
        if user.password_hash.is_some() {
            "password set"
        } else {
            "no password"
        }
        .to_owned(),
    ];
    if let Some(i) = &issued {
        what.push(format!(
            "certificate valid until {}",
            fmt_date(i.info.not_after)
        ));
    }
    eprintln!("added user \"{}\" ({})", a.name, what.join(", "));
    eprintln!(
        "export a profile with: warren profile export {} > {}.ovpn",
        a.name, a.name
    );
    Ok(())
}

fn set(dir: &Path, a: SetArgs) -> Result<()> {
    let state = open_state(dir)?;
    let change = UserChange {
        fixed_ip: if a.no_fixed_ip {
            Some(None)
        } else {
            a.fixed_ip.map(Some)
        },
        routes: if a.clear_routes {
            Some(Vec::new())
        } else if a.routes.is_empty() {
            None
        } else {
            Some(a.routes)
        },
        expires_at: if a.no_expiry {
            Some(None)
        } else {
            a.expires.map(Some)
        },
        ..Default::default()
    };
    let site = a.site.apply(&state.store.user_site(&a.name)?)?;
    let access = !a.access.is_empty() || !a.membership.is_empty();
    if change == UserChange::default() && site.is_none() && !access {
        bail!("nothing to change (see `warren user set --help`)");
    }
    if change != UserChange::default() {
        state.store.update_user(&a.name, &change)?;
    }
    if let Some(site) = &site {
        state.store.set_user_site(&a.name, site)?;
    }
    if access {
        crate::access::set_user(&*state.store, &a.name, &a.access, &a.membership)?;
    }
    eprintln!("updated user \"{}\"", a.name);
    Ok(())
}

fn set_enabled(dir: &Path, name: &str, enabled: bool) -> Result<()> {
    let state = open_state(dir)?;
    state.store.update_user(
        name,
        &UserChange {
            enabled: Some(enabled),
            ..Default::default()
        },
    )?;
    eprintln!(
        "{} user \"{name}\"",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

#[derive(Serialize)]
struct UserView {
    name: String,
    enabled: bool,
    expired: bool,
    has_password: bool,
    expires_at: Option<String>,
    fixed_ip: Option<String>,
    routes: Vec<String>,
    created_at: String,
    certificate_expires: Option<String>,
    lease: Option<String>,
}

fn view(store: &dyn Store, u: &User, now: std::time::SystemTime) -> Result<UserView> {
    let cert = store
        .certs(&CertFilter {
            common_name: Some(u.name.clone()),
            kind: Some(warren_pki::CertKind::Client),
            unrevoked_only: true,
        })?
        .into_iter()
        .filter(|c| c.is_usable_at(now))
        .map(|c| c.not_after)
        .max();
    Ok(UserView {
        name: u.name.clone(),
        enabled: u.enabled,
        expired: u.is_expired(now),
        has_password: u.password_hash.is_some(),
        expires_at: u.expires_at.map(fmt_rfc3339),
        fixed_ip: u.fixed_ip.map(|i| i.to_string()),
        routes: u.routes.iter().map(|r| r.to_string()).collect(),
        created_at: fmt_rfc3339(u.created_at),
        certificate_expires: cert.map(fmt_rfc3339),
        lease: store.lease_for(&u.name)?.map(|l| l.ip.to_string()),
    })
}

fn list(dir: &Path, json: bool) -> Result<()> {
    let state = open_state_for_reading(dir)?;
    let now = wall_now();
    let users = state.store.users()?;
    let views = users
        .iter()
        .map(|u| view(&*state.store, u, now))
        .collect::<Result<Vec<_>>>()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    let rows: Vec<[String; 6]> = views
        .iter()
        .map(|v| {
            let status = if !v.enabled {
                "disabled"
            } else if v.expired {
                "expired"
            } else {
                "enabled"
            };
            [
                v.name.clone(),
                status.to_owned(),
                if v.has_password { "yes" } else { "no" }.to_owned(),
                v.certificate_expires
                    .as_deref()
                    .map(|d| d[..10].to_owned())
                    .unwrap_or_else(|| "none".to_owned()),
                v.fixed_ip.clone().unwrap_or_else(|| "-".to_owned()),
                v.expires_at
                    .as_deref()
                    .map(|d| d[..10].to_owned())
                    .unwrap_or_else(|| "never".to_owned()),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "STATUS",
            "PASSWORD",
            "CERT UNTIL",
            "FIXED IP",
            "EXPIRES",
        ],
        &rows,
    );
    Ok(())
}

#[derive(Serialize)]
struct CertBrief {
    serial: String,
    status: &'static str,
    not_after: String,
}

#[derive(Serialize)]
struct UserDetail {
    #[serde(flatten)]
    user: UserView,
    /// Networks behind this user's client (`--subnet`).
    subnets: Vec<String>,
    /// Options pushed to this user only (`--push`).
    push: Vec<String>,
    certificates: Vec<CertBrief>,
    /// The server's failed-login policy (its counters live in the running server only).
    login_limits: String,
}

fn show(dir: &Path, name: &str, json: bool) -> Result<()> {
    let state = open_state_for_reading(dir)?;
    let now = wall_now();
    let Some(u) = state.store.user(name)? else {
        bail!("no user {name:?} (see `warren user list`)");
    };
    let v = view(&*state.store, &u, now)?;
    let certs: Vec<CertBrief> = state
        .store
        .certs(&CertFilter {
            common_name: Some(name.to_owned()),
            kind: Some(warren_pki::CertKind::Client),
            unrevoked_only: false,
        })?
        .iter()
        .map(|c| CertBrief {
            serial: c.serial.to_string(),
            status: c.status_at(now),
            not_after: fmt_rfc3339(c.not_after),
        })
        .collect();
    let site = state.store.user_site(name)?;
    if json {
        let d = UserDetail {
            user: v,
            subnets: site.subnets.iter().map(|n| n.to_string()).collect(),
            push: site.push.clone(),
            certificates: certs,
            login_limits: RateLimitConfig::default().to_string(),
        };
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    println!("name:        {}", v.name);
    println!(
        "status:      {}",
        if !v.enabled {
            "disabled"
        } else if v.expired {
            "expired"
        } else {
            "enabled"
        }
    );
    println!(
        "password:    {}",
        if v.has_password { "set" } else { "none" }
    );
    println!(
        "expires:     {}",
        v.expires_at.as_deref().unwrap_or("never")
    );
    println!("fixed IP:    {}", v.fixed_ip.as_deref().unwrap_or("-"));
    println!(
        "routes:      {}",
        if v.routes.is_empty() {
            "-".to_owned()
        } else {
            v.routes.join(", ")
        }
    );
    println!(
        "subnets:     {}",
        if site.subnets.is_empty() {
            "-".to_owned()
        } else {
            let s: Vec<String> = site.subnets.iter().map(|n| n.to_string()).collect();
            s.join(", ")
        }
    );
    for p in &site.push {
        println!("push:        \"{p}\"");
    }
    println!("lease:       {}", v.lease.as_deref().unwrap_or("-"));
    for line in crate::access::describe_user(&*state.store, name)? {
        println!("{line}");
    }
    println!("created:     {}", v.created_at);
    if certs.is_empty() {
        println!("certificates: none");
    } else {
        println!("certificates:");
        for c in &certs {
            println!("  {}  {}  until {}", c.serial, c.status, c.not_after);
        }
    }
    if v.has_password {
        // The failure counters live in the running server's memory only (a restart clears
        // them), so the policy is what can be shown here; refusals are in the server's log.
        println!(
            "login limits: {} (counted by the running server, not stored; refusals are logged \
             as \"too many failed logins\")",
            RateLimitConfig::default()
        );
    }
    Ok(())
}
