//! User scripts (OpenVPN options.c "up", "down", "route-up", "client-connect",
//! "client-disconnect", "learn-address", "auth-user-pass-verify", "script-security"; the
//! man page's "Script Hooks").
//!
//! A script is one config parameter, split into words the way OpenVPN's `argv_parse_cmd`
//! does (quotes and backslashes, no shell), so `up "/etc/openvpn/up.sh arg"` runs
//! `/etc/openvpn/up.sh` with `arg` and then the arguments OpenVPN appends. The program's
//! path resolves like the other file names of the config.
//!
//! `script-security` (0 to 3, default 1) gates them. OpenVPN only finds out when it tries to
//! run a script (`WARNING: External program may not be called unless '--script-security 2'
//! or higher is enabled`) and the hook then fails; warren refuses such a config at start
//! instead, naming the script's line. Level 3 also lets `password` into the environment
//! of `auth-user-pass-verify ... via-env` (OpenVPN env_set.c `env_allowed`).
//!
//! `warren-script-timeout SECONDS` (default [`DEFAULT_SCRIPT_TIMEOUT`]) bounds every run:
//! OpenVPN waits for ever, warren kills a script that runs longer and counts it as failed.
use std::path::Path;
use std::time::Duration;

use crate::error::{ConfigError, Location};
use crate::lower::{Lowerer, View};
use crate::material::resolve_path;

/// How long a script may run unless `warren-script-timeout` says otherwise.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// OpenVPN's default `script-security` (options.c init_options: SSEC_BUILT_IN).
pub const DEFAULT_SCRIPT_SECURITY: u8 = 1;

/// One configured script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptCommand {
    /// The program (resolved) and its own arguments; OpenVPN's arguments come after.
    pub argv: Vec<String>,
    /// The directive, for messages.
    pub location: Location,
}

/// How `auth-user-pass-verify` gets the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// `via-env`: `username` and (with `script-security 3`) `password` variables.
    Env,
    /// `via-file`: a file of two lines, user name and password, as the last argument.
    File,
}

/// The scripts of a config, and their settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripts {
    /// `script-security` 0..=3.
    pub security: u8,
    /// `warren-script-timeout`.
    pub timeout: Duration,
    pub up: Option<ScriptCommand>,
    pub down: Option<ScriptCommand>,
    pub route_up: Option<ScriptCommand>,
    /// Server only.
    pub client_connect: Option<ScriptCommand>,
    /// Server only.
    pub client_disconnect: Option<ScriptCommand>,
    /// Server only.
    pub learn_address: Option<ScriptCommand>,
    /// Server only.
    pub auth_user_pass_verify: Option<(ScriptCommand, AuthVia)>,
    /// `setenv NAME VALUE` lines: variables every script gets.
    pub setenv: Vec<(String, String)>,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            security: DEFAULT_SCRIPT_SECURITY,
            timeout: DEFAULT_SCRIPT_TIMEOUT,
            up: None,
            down: None,
            route_up: None,
            client_connect: None,
            client_disconnect: None,
            learn_address: None,
            auth_user_pass_verify: None,
            setenv: Vec::new(),
        }
    }
}

impl Scripts {
    /// Whether any script runs when a client logs in (so logins must be decided off the
    /// packet loop).
    pub fn decide_logins(&self) -> bool {
        self.client_connect.is_some() || self.auth_user_pass_verify.is_some()
    }

    /// Every configured script with its directive name.
    pub fn all(&self) -> Vec<(&'static str, &ScriptCommand)> {
        let mut v = Vec::new();
        for (name, s) in [
            ("up", &self.up),
            ("down", &self.down),
            ("route-up", &self.route_up),
            ("client-connect", &self.client_connect),
            ("client-disconnect", &self.client_disconnect),
            ("learn-address", &self.learn_address),
        ] {
            if let Some(s) = s {
                v.push((name, s));
            }
        }
        if let Some((s, _)) = &self.auth_user_pass_verify {
            v.push(("auth-user-pass-verify", s));
        }
        v
    }
}

/// The script directives of a server config.
pub(crate) const SERVER_SCRIPT_DIRECTIVES: &[&str] = &[
    "script-security",
    "warren-script-timeout",
    "up",
    "down",
    "route-up",
    "client-connect",
    "client-disconnect",
    "learn-address",
    "auth-user-pass-verify",
];

/// The script directives of a client config.
pub(crate) const CLIENT_SCRIPT_DIRECTIVES: &[&str] = &[
    "script-security",
    "warren-script-timeout",
    "up",
    "down",
    "route-up",
];

/// The script directives as they are read; [`ScriptState::finish`] checks them.
#[derive(Default)]
pub(crate) struct ScriptState {
    scripts: Scripts,
    security_seen: bool,
}

impl ScriptState {
    /// Takes one script directive of `allowed`; `Ok(false)` for any other.
    pub(crate) fn apply(
        &mut self,
        v: &View<'_>,
        allowed: &[&str],
        lw: &Lowerer<'_>,
    ) -> Result<bool, ConfigError> {
        // `ignore-unknown-option up` before `up ...` skips the script on purpose (the
        // advice warren gave before it ran scripts); the caller then warns.
        if !allowed.contains(&v.name) {
            return Ok(false);
        }
        // (Only OpenVPN's own script directives: `ignore-unknown-option
        // warren-script-timeout` is how a file shared with stock OpenVPN carries it.)
        if v.name != "warren-script-timeout" && v.name != "script-security" && lw.ignores(v.name) {
            return Ok(false);
        }
        let base_dir = lw.base_dir;
        let s = &mut self.scripts;
        match v.name {
            "script-security" => {
                v.expect(1, 1, "1 parameter (0 to 3)")?;
                let n = v.u32_at(0)?;
                s.security = u8::try_from(n)
                    .ok()
                    .filter(|n| *n <= 3)
                    .ok_or_else(|| v.invalid(0, "expected 0, 1, 2 or 3"))?;
                self.security_seen = true;
            }
            "warren-script-timeout" => {
                v.expect(1, 1, "1 parameter (seconds)")?;
                let n = v.u32_at(0)?;
                if n == 0 || n > 3600 {
                    return Err(v.invalid(0, "expected 1 to 3600 seconds"));
                }
                s.timeout = Duration::from_secs(u64::from(n));
            }
            "auth-user-pass-verify" => {
                v.expect(2, 2, "2 parameters (a command and via-env or via-file)")?;
                let via = match v.arg(1) {
                    "via-env" => AuthVia::Env,
                    "via-file" => AuthVia::File,
                    _ => return Err(v.invalid(1, "expected via-env or via-file")),
                };
                s.auth_user_pass_verify = Some((command(v, base_dir)?, via));
            }
            name => {
                v.expect(1, 1, "1 parameter (a command; quote it to give arguments)")?;
                let c = Some(command(v, base_dir)?);
                match name {
                    "up" => s.up = c,
                    "down" => s.down = c,
                    "route-up" => s.route_up = c,
                    "client-connect" => s.client_connect = c,
                    "client-disconnect" => s.client_disconnect = c,
                    "learn-address" => s.learn_address = c,
                    _ => return Ok(false),
                }
            }
        }
        Ok(true)
    }

    /// Refuses a script that `script-security` would not let run.
    pub(crate) fn finish(self) -> Result<Scripts, ConfigError> {
        let s = self.scripts;
        if s.security < 2
            && let Some((name, c)) = s.all().first()
        {
            return Err(ConfigError::Conflict {
                location: c.location.clone(),
                message: format!(
                    "`{name}` cannot run with script-security {} ({}): OpenVPN would refuse \
                     to call it (\"External program may not be called unless \
                     '--script-security 2' or higher is enabled\"); add `script-security 2`",
                    s.security,
                    if self.security_seen {
                        "set in the config"
                    } else {
                        "the default"
                    }
                )
                .into(),
            });
        }
        Ok(s)
    }
}

/// The command of `v`'s first parameter.
fn command(v: &View<'_>, base_dir: &Path) -> Result<ScriptCommand, ConfigError> {
    let mut argv = split_command(v.arg(0));
    let Some(first) = argv.first_mut() else {
        return Err(v.invalid(0, "empty command"));
    };
    *first = resolve_path(first, base_dir).display().to_string();
    Ok(ScriptCommand {
        argv,
        location: v.loc.clone(),
    })
}

/// Words of a command line as OpenVPN's `argv_parse_cmd` (options.c `parse_line`) splits
/// them: blanks separate, `"..."` and `'...'` group, a backslash outside single quotes
/// takes the next character literally.
pub fn split_command(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_openvpn() {
        assert_eq!(split_command("/bin/up.sh"), ["/bin/up.sh"]);
        assert_eq!(
            split_command("  /bin/sh -c 'echo a b' \"x y\" z\\ w "),
            ["/bin/sh", "-c", "echo a b", "x y", "z w"]
        );
        assert!(split_command("   ").is_empty());
    }
}
