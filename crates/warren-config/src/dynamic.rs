//! The dynamic config file a `client-connect` script writes (its path is the script's last
//! argument): per-client directives in the config syntax, read back after the script
//! exits 0 (OpenVPN multi.c `multi_client_connect_post`, `options_server_import` with the
//! CCD option classes, openvpn-ops.md §6.2).
//!
//! Taken: `push "..."` (appended after the server's pushes), `push-reset` (drop the
//! server config's `push` list for this client), `ifconfig-push LOCAL MASK|REMOTE` (a
//! static address) and `disable` (refuse the client). Blank lines and `#`/`;` comments
//! are skipped. Any other directive is an error: the caller refuses the client rather than
//! give it settings other than the script meant.
//!
//! This is a small parser of its own; `client-config-dir` files have the same format and
//! the two should share one when both exist.
use std::net::Ipv4Addr;

use crate::error::ConfigError;
use crate::lex::parse_str;

/// What a client-connect file asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// `push "..."` options, in order.
    pub push: Vec<String>,
    /// `push-reset`: the server config's pushes are not sent to this client.
    pub push_reset: bool,
    /// `ifconfig-push LOCAL ...`: the client's address.
    pub ifconfig_push: Option<Ipv4Addr>,
    /// `disable`: the client is refused.
    pub disable: bool,
}

/// Reads a client-connect file's text. `origin` names it in errors.
pub fn parse_client_options(text: &str, origin: &str) -> Result<ClientOptions, ConfigError> {
    let mut o = ClientOptions::default();
    for d in parse_str(text, origin)? {
        let loc = d.location();
        let arg = |i: usize| d.args.get(i).map_or("", |a| a.value.as_str());
        let count = |min: usize, max: usize, expected: &'static str| {
            if d.inline.is_some() || d.args.len() < min || d.args.len() > max {
                Err(ConfigError::ArgCount {
                    location: loc.clone(),
                    directive: d.name.value.clone(),
                    expected,
                    found: d.args.len(),
                })
            } else {
                Ok(())
            }
        };
        let invalid = |value: &str, reason: &'static str| ConfigError::InvalidValue {
            location: loc.clone(),
            directive: d.name.value.clone(),
            value: value.to_owned(),
            reason: reason.into(),
        };
        match d.name.value.as_str() {
            "push" => {
                count(1, 1, "1 parameter (a quoted option)")?;
                let opt = arg(0).trim();
                if opt.is_empty() || opt.len() > 255 {
                    return Err(invalid(
                        opt,
                        "a pushed option must have 1 to 255 characters",
                    ));
                }
                let first = opt.split_ascii_whitespace().next().unwrap_or("");
                if matches!(first, "comp-lzo" | "compress") {
                    return Err(invalid(opt, "compression is refused"));
                }
                o.push.push(opt.to_owned());
            }
            "push-reset" => {
                count(0, 0, "no parameters")?;
                o.push_reset = true;
                // OpenVPN push_reset: pushes before it in the same file go too.
                o.push.clear();
            }
            "ifconfig-push" => {
                count(2, 3, "2 or 3 parameters (LOCAL NETMASK|REMOTE [alias])")?;
                let ip = arg(0)
                    .parse()
                    .map_err(|_| invalid(arg(0), "expected an IPv4 address"))?;
                arg(1)
                    .parse::<Ipv4Addr>()
                    .map_err(|_| invalid(arg(1), "expected an IPv4 netmask or address"))?;
                o.ifconfig_push = Some(ip);
            }
            "disable" => {
                count(0, 0, "no parameters")?;
                o.disable = true;
            }
            other => {
                return Err(ConfigError::Unsupported {
                    location: loc.clone(),
                    name: other.to_owned(),
                    reason: "only `push`, `push-reset`, `ifconfig-push` and `disable` are \
                             supported in a client-connect file; the client is refused",
                });
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_client_connect_writes() {
        let o = parse_client_options(
            "# comment\npush \"route 192.0.2.0 255.255.255.0\"\n\nifconfig-push 10.8.0.50 255.255.255.0\n",
            "cc",
        )
        .expect("parse");
        assert_eq!(o.push, ["route 192.0.2.0 255.255.255.0"]);
        assert_eq!(o.ifconfig_push, Some(Ipv4Addr::new(10, 8, 0, 50)));
        assert!(!o.push_reset && !o.disable);

        let o = parse_client_options("push \"a\"\npush-reset\npush \"b\"\ndisable\n", "cc")
            .expect("parse");
        assert_eq!(o.push, ["b"]);
        assert!(o.push_reset && o.disable);

        assert_eq!(
            parse_client_options("", "cc").expect("empty"),
            ClientOptions::default()
        );
    }

    #[test]
    fn refuses_what_it_cannot_apply() {
        let e =
            parse_client_options("iroute 10.9.0.0 255.255.255.0\n", "cc:x").expect_err("iroute");
        assert!(e.to_string().contains("cc:x:1"), "{e}");
        assert!(parse_client_options("ifconfig-push nope 255.0.0.0\n", "cc").is_err());
        assert!(parse_client_options("push \"comp-lzo no\"\n", "cc").is_err());
        assert!(parse_client_options("push\n", "cc").is_err());
    }
}
