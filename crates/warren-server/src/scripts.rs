//! The server config's scripts as the driver runs them ([`warren_driver::scripts`]): the
//! settings gathered, the client-connect file parser (warren-config's) handed over, and
//! `up`/`route-up`/`down` around the server's life.
use std::sync::Arc;

use tracing::info;
use warren_driver::scripts::{
    ClientOptions, ParseFn, ServerScripts, TunFacts, run_route_up, run_up_down,
};

use crate::error::{Error, Result};
use crate::management::{ServerFacts, daemon_env};

/// The server's script settings with the server's own variables.
pub fn server_scripts(facts: &ServerFacts<'_>) -> Arc<ServerScripts> {
    let s = &facts.cfg.scripts;
    let env = daemon_env(facts);
    if let Some((c, warren_config::AuthVia::Env)) = &s.auth_user_pass_verify
        && s.security < 3
    {
        // env_set.c env_allowed: OpenVPN drops `password` from script environments below 3.
        tracing::warn!(
            "{}: auth-user-pass-verify via-env gets no `password` variable with script-security \
             {} (OpenVPN passes it only with script-security 3); use via-file, or set 3",
            c.location,
            s.security
        );
    }
    Arc::new(ServerScripts {
        client_connect: s.client_connect.as_ref().map(|c| c.argv.clone()),
        client_disconnect: s.client_disconnect.as_ref().map(|c| c.argv.clone()),
        learn_address: s.learn_address.as_ref().map(|c| c.argv.clone()),
        auth_user_pass_verify: s
            .auth_user_pass_verify
            .as_ref()
            .map(|(c, via)| (c.argv.clone(), *via == warren_config::AuthVia::File)),
        security: s.security,
        timeout: s.timeout,
        daemon_env: env,
        tmp_dir: std::env::temp_dir(),
        netmask: facts.netmask,
        // OpenVPN's hand-window (default 60 s): how long the client waits.
        deferred_limit: std::time::Duration::from_secs(facts.cfg.hand_window.map_or(60, u64::from)),
    })
}

/// The client-config-dir (if any) and client-connect files, read with warren-config's
/// per-client parser and applied as [`crate::ccd`] applies them.
struct Options(Option<crate::ccd::CcdDir>);

impl ClientOptions for Options {
    fn config_dir(
        &self,
        common_name: &str,
        grant: &mut warren_openvpn::AuthGrant,
    ) -> Result<(), String> {
        match self.0.as_ref().map(|d| d.lookup(common_name)).transpose()? {
            Some(Some(o)) => crate::ccd::apply_options(&o, grant),
            _ => Ok(()),
        }
    }

    fn connect_file(
        &self,
        text: &str,
        origin: &str,
        grant: &mut warren_openvpn::AuthGrant,
    ) -> Result<(), String> {
        let o = warren_config::client_options_from_str(text, origin).map_err(|e| e.to_string())?;
        crate::ccd::apply_options(&o, grant)
    }
}

/// The per-client options of logins decided by scripts.
pub fn parse_fn(ccd: Option<crate::ccd::CcdDir>) -> ParseFn {
    Arc::new(Options(ccd))
}

fn tun_facts(facts: &ServerFacts<'_>) -> TunFacts {
    TunFacts {
        dev: facts.dev.to_owned(),
        tun_mtu: facts.tun_mtu,
        local: facts.tun_ip.to_string(),
        remote_or_netmask: facts.netmask.to_string(),
    }
}

/// The environment of `up`/`down`: the daemon's, without what OpenVPN only sets once
/// routes are added (`redirect_gateway`).
fn tun_env(scripts: &ServerScripts) -> Vec<warren_driver::scripts::Var> {
    let mut e = scripts.daemon_env.clone();
    e.retain(|(k, _)| k != "redirect_gateway");
    e
}

/// `up` then `route-up`, once the tun device is configured; a failing `up` stops the
/// server as in OpenVPN (S_FATAL), a failing `route-up` is only logged.
pub fn run_up(facts: &ServerFacts<'_>, scripts: &ServerScripts) -> Result<()> {
    let s = &facts.cfg.scripts;
    if let Some(up) = &s.up
        && !run_up_down(
            "--up",
            &up.argv,
            "up",
            &tun_env(scripts),
            &tun_facts(facts),
            None,
            s.timeout,
        )
    {
        return Err(Error::Script(format!(
            "{}: the `up` script failed; stopping as OpenVPN does",
            up.location
        )));
    }
    if let Some(r) = &s.route_up
        && run_route_up(&r.argv, &scripts.daemon_env, s.timeout)
    {
        info!("route-up script ran");
    }
    Ok(())
}

/// `down`, after the loop ended (`signal` names why, as OpenVPN's `signal` variable).
pub fn run_down(facts: &ServerFacts<'_>, scripts: &ServerScripts, signal: &str) {
    let s = &facts.cfg.scripts;
    if let Some(down) = &s.down {
        run_up_down(
            "--up/--down",
            &down.argv,
            "down",
            &scripts.daemon_env,
            &tun_facts(facts),
            Some(signal),
            s.timeout,
        );
    }
}
