//! The `warren` binary: an OpenVPN-compatible VPN server.
//!
//! The binary is thin: it parses the command line, loads OpenVPN-syntax configs with
//! `warren-config`, sets up logging and output, and hands the server to `warren-server`
//! (the client still turns its profile into an engine and a `warren-driver` loop here). Errors are `anyhow` chains
//! printed as one `error: ...` line (config errors lead with `file:line`), exit status 1.
#![forbid(unsafe_code)]

mod access;
mod args;
mod client;
mod demo;
mod genkey;
mod logging;
mod pki;
mod profile;
mod server_args;
mod ula;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An OpenVPN-compatible VPN, written in Rust.
#[derive(Debug, Parser)]
#[command(
    name = "warren",
    version,
    about = "A VPN server and client that speaks the OpenVPN 2.6 protocol",
    propagate_version = true
)]
struct Cli {
    /// More log output (repeatable): raises the level set by the config's `verb`.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a VPN server: with no options, from the state directory (created on the first run:
    /// CA, server certificate, tls-crypt key, user database); or from an OpenVPN-style
    /// server config (--config).
    Server(server_args::ServerArgs),
    /// Connect to an OpenVPN or warren server with an ordinary `.ovpn` client profile.
    Client(ClientArgs),
    /// Show warren end to end on this machine (as root): two network namespaces, a
    /// throwaway PKI, a server, a client, ping and throughput; everything is removed after.
    Demo(DemoArgs),
    /// The built-in certificate authority: init, issue, revoke, renew, list, crl, import;
    /// genkey makes tls-crypt(-v2) key files.
    Pki(pki::PkiArgs),
    /// VPN users: add, list, show, passwd, set, disable, enable, del.
    User(user::UserArgs),
    /// Groups of users sharing access rules: add, del, list, set.
    Group(access::GroupArgs),
    /// Client profiles: export a self-contained .ovpn file.
    Profile(profile::ProfileArgs),
    /// Internal: started by a server that drops privileges with NAT on; undoes that
    /// server's NAT when its stdin closes.
    #[command(hide = true)]
    NatUndo {
        #[arg(long)]
        pid: u32,
    },
    /// Packaging: writes the man pages (warren.1, warren-server.1, ...), generated from
    /// these argument definitions, into DIR.
    #[command(hide = true)]
    ManPages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The client profile (`.ovpn`, OpenVPN syntax).
    #[arg(
        value_name = "PROFILE",
        required_unless_present_any = ["config", "internal_restore_after", "kill_switch_off"],
        conflicts_with = "config"
    )]
    profile: Option<PathBuf>,
    /// The client profile, as with `openvpn --config`.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Do not offer tls-ekm key derivation: the server must fall back to the TLS1-PRF.
    #[arg(long)]
    no_tls_ekm: bool,
    /// Move one packet per system call: no tun offloads, no UDP GRO/GSO (also
    /// WARREN_NO_OFFLOAD=1, or `warren-offload off` in the profile).
    #[arg(long)]
    no_offload: bool,
    /// While the client runs, also while it reconnects, let nothing leave this machine
    /// outside the tunnel but the tunnel's own packets to its servers (an nftables table of
    /// its own, removed when the client exits; also `warren-kill-switch on` in the profile).
    #[arg(long)]
    kill_switch: bool,
    /// Remove the kill switch (and the routes and DNS settings) that a client left behind
    /// when it was killed or crashed, then exit.
    #[arg(long, conflicts_with_all = ["profile", "config", "kill_switch"])]
    kill_switch_off: bool,
    /// The root helper of a client that dropped privileges (`user`/`group`): undo the
    /// network changes of client PID once it is gone.
    #[arg(long, hide = true, value_name = "PID")]
    internal_restore_after: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Seconds of throughput measurement.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=30))]
    seconds: u32,
    /// Use the built-in TCP stream even when iperf3 is installed.
    #[arg(long)]
    builtin_throughput: bool,
    #[arg(long, hide = true, value_name = "ADDR")]
    internal_sink: Option<std::net::SocketAddr>,
    #[arg(long, hide = true, value_name = "ADDR")]
    internal_source: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    warren_server::state::set_console(&args::Terminal);
    let result = match cli.command {
        Command::Server(args) if !args.internal_key_reader.is_empty() => {
            warren_server::key_reader_main(&args.internal_key_reader).map_err(Into::into)
        }
        Command::Server(args) => server_args::run(&args, cli.verbose, cli.quiet),
        Command::Client(ClientArgs {
            internal_restore_after: Some(pid),
            ..
        }) => client::restore_helper(pid, cli.verbose, cli.quiet),
        Command::Client(ClientArgs {
            kill_switch_off: true,
            ..
        }) => client::kill_switch_off(cli.verbose, cli.quiet),
        Command::Client(args) => {
            let flags = client::ClientFlags {
                no_tls_ekm: args.no_tls_ekm,
                no_offload: args.no_offload,
                kill_switch: args.kill_switch,
                verbose: cli.verbose,
                quiet: cli.quiet,
            };
            match args.profile.or(args.config) {
                Some(p) => client::run(&p, &flags),
                None => Err(anyhow::anyhow!(
                    "give the client profile: warren client PROFILE.ovpn"
                )),
            }
        }
        Command::Demo(args) => match (args.internal_sink, args.internal_source) {
            (Some(a), _) => demo::internal_sink(a),
            (_, Some(a)) => demo::internal_source(a, args.seconds),
            _ => demo::run(&demo::DemoFlags {
                seconds: args.seconds,
                builtin: args.builtin_throughput,
                verbose: cli.verbose,
            }),
        },
        Command::Pki(args) => pki::run(args),
        Command::User(args) => user::run(args),
        Command::Group(args) => access::run_group(args),
        Command::Profile(args) => profile::run(args),
        Command::NatUndo { pid } => server_args::nat_undo_helper(pid, cli.verbose, cli.quiet),
        Command::ManPages { dir } => man_pages(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `warren man-pages DIR`: one page per visible command, from the clap definitions.
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the man pages into {}", dir.display()))?;
    println!("man pages written to {}", dir.display());
    Ok(())
}

/// The error chain on one line, "what we did: why it failed", skipping a cause whose text
/// the previous message already ends with (many library errors print their source too).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `--network CIDR`: an IPv4 network warren can hand out addresses from. Like OpenVPN's
/// `server NETWORK NETMASK`, an address with host bits set is an error, and so are networks
/// no client can use (0.0.0.0/8 "this network", loopback, multicast, reserved/broadcast) and
/// ones too small for a server and a client.
pub(crate) fn parse_vpn_network(s: &str) -> Result<ipnet::Ipv4Net, String> {
    let net: ipnet::Ipv4Net = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 network in CIDR form (e.g. 10.8.0.0/24)"))?;
    if net.trunc() != net {
        return Err(format!(
            "{net} has host bits set; the network is {} (OpenVPN's `server` refuses this too)",
            net.trunc()
        ));
    }
    let a = net.network();
    let unusable = if a.octets()[0] == 0 {
        Some("0.0.0.0/8 means \"this network\" and cannot be routed")
    } else if a.is_loopback() {
        Some("it is the loopback range 127.0.0.0/8")
    } else if a.is_multicast() {
        Some("it is multicast (224.0.0.0/4)")
    } else if a.octets()[0] >= 240 {
        Some("it is reserved (240.0.0.0/4) or broadcast")
    } else if net.prefix_len() < 8 {
        Some("it is wider than /8 and overlaps reserved ranges")
    } else {
        None
    };
    if let Some(why) = unusable {
        return Err(format!(
            "{net} cannot be a VPN network: {why}; use a private range such as 10.8.0.0/24"
        ));
    }
    if net.prefix_len() > 30 {
        return Err(format!(
            "{net} is too small for a server and a client (at most /30)"
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn man_pages_come_from_the_argument_definitions() {
        let dir = std::env::temp_dir().join(format!("warren-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        man_pages(&dir).unwrap();
        let server = std::fs::read_to_string(dir.join("warren-server.1")).unwrap();
        assert!(server.starts_with(".ie"), "roff: {}", &server[..80]);
        assert!(server.contains("metrics"), "--metrics is documented");
        let top = std::fs::read_to_string(dir.join("warren.1")).unwrap();
        assert!(top.contains("warren\\-server(1)"), "{top}");
        // Hidden commands get no page.
        assert!(!dir.join("warren-nat-undo.1").exists());
        assert!(!dir.join("warren-man-pages.1").exists());
        assert!(dir.join("warren-user-add.1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn vpn_networks() {
        for good in [
            "10.8.0.0/24",
            "192.168.77.0/30",
            "100.64.0.0/10",
            "172.16.0.0/12",
        ] {
            assert!(parse_vpn_network(good).is_ok(), "{good}");
        }
        for bad in [
            "0.0.0.0/24",
            "0.0.0.0/0",
            "127.0.0.0/8",
            "224.0.0.0/24",
            "255.255.255.0/24",
            "10.8.0.5/24",
            "10.8.0.0/31",
            "10.8.0.0",
            "fd00::/64",
            "x",
        ] {
            assert!(parse_vpn_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_server_values_are_errors() {
        for args in [
            &["warren", "server", "--max-clients", "0"][..],
            &["warren", "server", "--network", "0.0.0.0/24"],
            &["warren", "server", "--network", "10.8.0.1/24"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["warren", "server", "--max-clients", "1"]).is_ok());
    }

    #[test]
    fn error_chain_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        #[derive(Debug)]
        struct Loud(std::io::Error);
        impl std::fmt::Display for Loud {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "reading x: {}", self.0)
            }
        }
        impl std::error::Error for Loud {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Loud(io)).context("starting");
        assert_eq!(one_line(&e), "starting: reading x: gone");
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["warren", "-vv", "server", "-c", "s.conf"]).expect("parse");
        assert_eq!(c.verbose, 2);
        let Command::Server(a) = c.command else {
            panic!("server subcommand")
        };
        assert_eq!(a.config, Some(PathBuf::from("s.conf")));
        let c = Cli::try_parse_from(["warren", "server", "--config", "x", "-q"]).expect("parse");
        assert_eq!(c.quiet, 1);
        // Zero-config: no options at all; the zero-config options do not mix with --config.
        let c = Cli::try_parse_from(["warren", "server"]).expect("parse");
        let Command::Server(a) = c.command else {
            panic!("server subcommand")
        };
        assert_eq!((a.config, a.port, a.dev.as_str()), (None, 1194, "tun"));
        assert!(
            Cli::try_parse_from([
                "warren",
                "server",
                "--auth",
                "cert+password",
                "--port",
                "1195"
            ])
            .is_ok()
        );
        assert!(
            Cli::try_parse_from(["warren", "server", "-c", "s.conf", "--port", "1195"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["warren", "server", "-c", "s.conf", "--state-dir", "d"]).is_err()
        );
        assert!(Cli::try_parse_from(["warren", "server", "--auth", "passwd"]).is_err());
        // --no-offload goes with both ways in.
        let c = Cli::try_parse_from(["warren", "server", "-c", "s.conf", "--no-offload"])
            .expect("parse");
        let Command::Server(a) = c.command else {
            panic!("server subcommand")
        };
        assert!(a.no_offload);
        let c = Cli::try_parse_from(["warren", "client", "a.ovpn", "--no-offload"]).expect("parse");
        let Command::Client(a) = c.command else {
            panic!("client subcommand")
        };
        assert!(a.no_offload);
    }

    #[test]
    fn client_and_demo_args() {
        let c =
            Cli::try_parse_from(["warren", "client", "alice.ovpn", "--no-tls-ekm"]).expect("parse");
        let Command::Client(a) = c.command else {
            panic!("client subcommand")
        };
        assert_eq!(
            (a.profile, a.config, a.no_tls_ekm),
            (Some(PathBuf::from("alice.ovpn")), None, true)
        );
        let c =
            Cli::try_parse_from(["warren", "client", "--config", "b.ovpn", "-v"]).expect("parse");
        let Command::Client(a) = c.command else {
            panic!("client subcommand")
        };
        assert_eq!(
            (a.profile, a.config, c.verbose),
            (None, Some(PathBuf::from("b.ovpn")), 1)
        );
        assert!(Cli::try_parse_from(["warren", "client"]).is_err());
        assert!(Cli::try_parse_from(["warren", "client", "a.ovpn", "-c", "b.ovpn"]).is_err());
        let c = Cli::try_parse_from(["warren", "demo"]).expect("parse");
        let Command::Demo(d) = c.command else {
            panic!("demo subcommand")
        };
        assert_eq!(d.seconds, 3);
        assert!(Cli::try_parse_from(["warren", "demo", "--seconds", "0"]).is_err());
    }
}
