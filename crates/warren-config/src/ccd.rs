//! Per-client option files: `client-config-dir DIR` (openvpn-ops.md §6).
//!
//! After a client authenticates, the server reads `DIR/<common name>`, else `DIR/DEFAULT`
//! ([`ccd_file_name`] turns a common name into the file name as OpenVPN does). A file holds
//! OpenVPN directives, one a line; warren takes those below. Any other line, or a bad
//! value, is an error naming the file and line: the server then refuses the client rather
//! than give it half its settings (OpenVPN logs such a line and goes on without it).
//!
//! | directive | meaning |
//! |---|---|
//! | `ifconfig-push ADDR MASK` | this client's IPv4 address (MASK is the server's netmask in `topology subnet`) |
//! | `ifconfig-ipv6-push ADDR/BITS [REMOTE]` | this client's IPv6 address |
//! | `iroute NET [MASK]` | the client's IPv4 network (MASK defaults to 255.255.255.255) |
//! | `iroute-ipv6 NET/BITS` | the client's IPv6 network |
//! | `push "OPTION"` | pushed to this client after the server's own options |
//! | `push-reset` | the server config's `push` lines are not sent to this client |
//! | `disable` | refuse this client |

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::ConfigError;
use crate::lex::parse_str;
use crate::lower::View;
use crate::types::Ipv6Prefix;

/// What a client-config-dir file says about one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// `ifconfig-push ADDR MASK`: the address and the netmask as written.
    pub ifconfig_push: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `ifconfig-ipv6-push ADDR/BITS`: the address (host bits kept) and bits.
    pub ifconfig_ipv6_push: Option<Ipv6Prefix>,
    /// `iroute NET [MASK]`: the network (host bits cleared) and its prefix length.
    pub iroutes: Vec<(Ipv4Addr, u8)>,
    /// `iroute-ipv6 NET/BITS`, host bits cleared.
    pub iroutes_ipv6: Vec<Ipv6Prefix>,
    /// `push "..."` contents, unquoted, in order.
    pub push: Vec<String>,
    /// `push-reset`.
    pub push_reset: bool,
    /// `disable`.
    pub disable: bool,
}

/// The name OpenVPN looks up in the client-config-dir for `common_name`: every byte that
/// is not printable ASCII, and `/`, becomes `_` (platform.c `platform_gen_path` with
/// `CC_PRINT`/`CC_SLASH` in the C locale, so `jürgen` is `j__rgen`); `None` for names that
/// cannot be a file (empty, `.`, `..`, longer than 255 bytes).
pub fn ccd_file_name(common_name: &str) -> Option<String> {
    let name: String = common_name
        .bytes()
        .map(|b| {
            if b == b'/' || !(0x20..0x7f).contains(&b) {
                '_'
            } else {
                char::from(b)
            }
        })
        .collect();
    (!matches!(name.as_str(), "" | "." | "..") && name.len() <= 255).then_some(name)
}

/// Reads a client-config-dir file.
pub fn load_client_options(path: &Path) -> Result<ClientOptions, ConfigError> {
    let text = crate::read_config_text(path)?;
    client_options_from_str(&text, &path.display().to_string())
}

/// Parses client-config-dir text; `origin` names it in errors.
pub fn client_options_from_str(text: &str, origin: &str) -> Result<ClientOptions, ConfigError> {
    let directives = parse_str(text, origin)?;
    let mut o = ClientOptions::default();
    for d in &directives {
        let v = View {
            name: &d.name.value,
            args: &d.args,
            inline: d.inline.as_deref(),
            loc: d.location(),
        };
        match v.name {
            "ifconfig-push" => {
                v.expect(
                    2,
                    3,
                    "2 parameters (the client's address and the netmask), and an optional alias",
                )?;
                let addr = v.ipv4_at(0)?;
                let mask = v.ipv4_at(1)?;
                if mask_len(mask).is_none() {
                    return Err(v.invalid(
                        1,
                        "expected a netmask like 255.255.255.0 (the `topology subnet` form; the \
                         net30/p2p form `ifconfig-push LOCAL REMOTE` is not supported yet)",
                    ));
                }
                o.ifconfig_push = Some((addr, mask));
            }
            "ifconfig-ipv6-push" => {
                v.expect(1, 2, "1 or 2 parameters (address/bits, remote)")?;
                let p = v.ipv6_prefix_at(0, 64..=128)?;
                if v.args.len() == 2 {
                    v.ipv6_at(1)?;
                }
                o.ifconfig_ipv6_push = Some(p);
            }
            "iroute" => {
                v.expect(1, 2, "1 or 2 parameters (network and netmask)")?;
                let net = v.ipv4_at(0)?;
                let len = match v.args.get(1) {
                    None => 32,
                    Some(_) => mask_len(v.ipv4_at(1)?).ok_or_else(|| {
                        v.invalid(1, "the netmask is not contiguous (like 255.255.255.0)")
                    })?,
                };
                let network = Ipv4Addr::from(u32::from(net) & prefix_mask(len));
                if network != net {
                    return Err(v.invalid(
                        0,
                        format!("host bits are set for this netmask; did you mean {network}?"),
                    ));
                }
                o.iroutes.push((network, len));
            }
            "iroute-ipv6" => {
                v.expect(1, 1, "1 parameter (network/bits)")?;
                let p = v.ipv6_prefix_at(0, 0..=128)?;
                let network = Ipv6Prefix {
                    addr: p.network(),
                    len: p.len,
                };
                if network.addr != p.addr {
                    return Err(v.invalid(0, format!("host bits are set; did you mean {network}?")));
                }
                o.iroutes_ipv6.push(network);
            }
            "push" => {
                v.expect(1, 1, "1 parameter (the quoted option to push)")?;
                let opt = v.arg(0).trim();
                if opt.is_empty() {
                    return Err(v.invalid(0, "nothing to push"));
                }
                if opt.len() > 255 {
                    return Err(v.invalid(
                        0,
                        "an option longer than 255 characters is lost on the client",
                    ));
                }
                o.push.push(opt.to_owned());
            }
            "push-reset" => {
                v.expect(0, 0, "no parameters")?;
                o.push_reset = true;
            }
            "disable" => {
                v.expect(0, 0, "no parameters")?;
                o.disable = true;
            }
            other => {
                let known = crate::directives::OPENVPN_DIRECTIVES.contains(&other);
                return Err(if known {
                    ConfigError::Unsupported {
                        location: v.loc.clone(),
                        name: other.to_owned(),
                        reason: "a client-config-dir file in warren takes ifconfig-push, \
                                 ifconfig-ipv6-push, iroute, iroute-ipv6, push, push-reset and \
                                 disable; remove this line",
                    }
                } else {
                    ConfigError::UnknownDirective {
                        location: v.loc.clone(),
                        name: other.to_owned(),
                        suggestion: [
                            "ifconfig-push",
                            "ifconfig-ipv6-push",
                            "iroute",
                            "iroute-ipv6",
                            "push",
                            "push-reset",
                            "disable",
                        ]
                        .into_iter()
                        .find(|k| strsim_close(other, k)),
                    }
                });
            }
        }
    }
    Ok(o)
}

/// A netmask's prefix length, `None` unless it is contiguous.
pub(crate) fn mask_len(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

fn prefix_mask(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

/// A cheap "did you mean": one edit apart, or one is the other with a dash.
fn strsim_close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let (mut i, mut j, mut edits) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            i += 1;
            j += 1;
            continue;
        }
        edits += 1;
        if edits > 1 {
            return false;
        }
        match a.len().cmp(&b.len()) {
            std::cmp::Ordering::Greater => i += 1,
            std::cmp::Ordering::Less => j += 1,
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    edits + (a.len() - i) + (b.len() - j) <= 1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_full_file() {
        let text = "# site A\n\
            ifconfig-push 10.8.0.50 255.255.255.0\n\
            ifconfig-ipv6-push fd00:8::50/64 fd00:8::1\n\
            iroute 192.168.77.0 255.255.255.0\n\
            iroute 10.9.9.9\n\
            iroute-ipv6 fd00:77::/64\n\
            push \"route 192.168.88.0 255.255.255.0\"\n\
            push-reset\n";
        let o = client_options_from_str(text, "ccd/site-a").unwrap();
        assert_eq!(
            o.ifconfig_push,
            Some((Ipv4Addr::new(10, 8, 0, 50), Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            o.ifconfig_ipv6_push,
            Some(Ipv6Prefix {
                addr: "fd00:8::50".parse().unwrap(),
                len: 64
            })
        );
        assert_eq!(
            o.iroutes,
            [
                (Ipv4Addr::new(192, 168, 77, 0), 24),
                (Ipv4Addr::new(10, 9, 9, 9), 32)
            ]
        );
        assert_eq!(o.iroutes_ipv6[0].to_string(), "fd00:77::/64");
        assert_eq!(o.push, ["route 192.168.88.0 255.255.255.0"]);
        assert!(o.push_reset && !o.disable);
        assert_eq!(
            client_options_from_str("disable\n", "x").unwrap(),
            ClientOptions {
                disable: true,
                ..Default::default()
            }
        );
        assert_eq!(
            client_options_from_str("", "x").unwrap(),
            ClientOptions::default()
        );
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        for (text, needle) in [
            ("push-reset\niroute 192.168.77.1 255.255.255.0\n", "ccd/a:2"),
            ("iroute 192.168.77.0 255.0.255.0\n", "not contiguous"),
            ("iroute nonsense\n", "IPv4"),
            ("iroute-ipv6 fd00:77::1/64\n", "did you mean fd00:77::/64"),
            ("ifconfig-push 10.8.0.5 10.8.0.6\n", "topology subnet"),
            ("ifconfig-push 10.8.0.5\n", "ccd/a:1"),
            ("\n\nirout 10.0.0.0\n", "ccd/a:3: unknown directive `irout`"),
            ("echo hello\n", "not supported by warren"),
            ("push \"\"\n", "nothing to push"),
            ("push \"route 1.2.3.0\n", "ccd/a:1"),
        ] {
            let e = client_options_from_str(text, "ccd/a")
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        let e = client_options_from_str("irout 10.0.0.0\n", "ccd/a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("iroute"), "{e}");
    }

    #[test]
    fn file_names_follow_openvpn() {
        assert_eq!(ccd_file_name("client1").as_deref(), Some("client1"));
        assert_eq!(ccd_file_name("a/b").as_deref(), Some("a_b"));
        assert_eq!(ccd_file_name("a\nb").as_deref(), Some("a_b"));
        assert_eq!(ccd_file_name("Jane Doe").as_deref(), Some("Jane Doe"));
        assert_eq!(ccd_file_name("jürgen").as_deref(), Some("j__rgen"));
        assert_eq!(ccd_file_name(&"x".repeat(256)), None);
        assert_eq!(ccd_file_name(".."), None);
        assert_eq!(ccd_file_name("."), None);
        assert_eq!(ccd_file_name(""), None);
    }
}
