//! The `warren` binary: an OpenVPN-compatible VPN server.
//!
//! The binary is thin: it parses the command line, loads OpenVPN-syntax configs with
//! `warren-config`, turns them into engine configs, opens the OS resources through
//! `warren-io`, and hands everything to a `warren-driver` loop. Errors are `anyhow` chains
//! printed as one `error: ...` line (config errors lead with `file:line`), exit status 1.
#![forbid(unsafe_code)]

mod logging;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An OpenVPN-compatible VPN, written in Rust.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about, propagate_version = true)]
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

/// Subcommands. Later: `client`, `demo`, `pki`, `user`, `profile`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a VPN server from an OpenVPN-style server config.
    Server(ServerArgs),
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// The server config (OpenVPN `server.conf` syntax).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(&args.config, cli.verbose, cli.quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain on one line: "what we did: why it failed".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["warren", "-vv", "server", "-c", "s.conf"]).expect("parse");
        assert_eq!(c.verbose, 2);
        let Command::Server(a) = c.command;
        assert_eq!(a.config, PathBuf::from("s.conf"));
        let c = Cli::try_parse_from(["warren", "server", "--config", "x", "-q"]).expect("parse");
        assert_eq!(c.quiet, 1);
        assert!(Cli::try_parse_from(["warren", "server"]).is_err());
    }
}
