//! Access rules from the user database and from `warren-access` directives, compiled for
//! the engine ([`warren_openvpn::access`]).

use std::collections::HashMap;
use std::sync::Arc;

use tracing::warn;
use warren_config::AccessDirective;
use warren_openvpn::access::{AccessEntry, AccessList, AccessRule, AccessRules, Action};
use warren_store::AccessRecord;

use crate::error::Context;

/// The list of stored records. A record that does not parse (a hand-edited database)
/// makes the list deny everything, with a warning: failing closed.
pub fn list_of(identity: &str, records: &[AccessRecord]) -> AccessList {
    let mut entries = Vec::with_capacity(records.len());
    for r in records {
        match r.rule.parse::<AccessRule>() {
            Ok(rule) => entries.push(AccessEntry {
                action: if r.allow { Action::Allow } else { Action::Deny },
                rule,
            }),
            Err(e) => {
                warn!("user {identity:?}: {e}; refusing all of its traffic until it is fixed");
                return deny_all();
            }
        }
    }
    AccessList(entries)
}

fn deny_all() -> AccessList {
    let any = |s: &str| AccessEntry {
        action: Action::Deny,
        rule: s.parse().expect("a constant rule"),
    };
    AccessList(vec![any("0.0.0.0/0"), any("::/0")])
}

/// The engine's form of a list (`None`: no rules).
pub fn compile(list: &AccessList) -> Option<Arc<AccessRules>> {
    list.compile().map(Arc::new)
}

/// `warren-access IDENTITY allow|deny RULE` lines (in order) as the engine's static rules;
/// a bad rule is an error naming its file and line.
pub fn from_directives(
    lines: &[AccessDirective],
) -> crate::Result<HashMap<String, Arc<AccessRules>>> {
    let mut lists: HashMap<String, AccessList> = HashMap::new();
    for d in lines {
        let rule = d
            .rule
            .parse::<AccessRule>()
            .with_context(|| format!("{}: warren-access", d.location))?;
        let action = if d.allow { Action::Allow } else { Action::Deny };
        lists
            .entry(d.identity.clone())
            .or_default()
            .0
            .push(AccessEntry { action, rule });
    }
    Ok(lists
        .into_iter()
        .filter_map(|(id, l)| compile(&l).map(|r| (id, r)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_stored_rule_denies_everything() {
        let recs = [
            AccessRecord {
                allow: true,
                rule: "10.0.0.0/8".into(),
            },
            AccessRecord {
                allow: true,
                rule: "10.0.0.0/99".into(),
            },
        ];
        let l = list_of("bob", &recs);
        assert_eq!(l.default_action(), Action::Allow);
        assert!(l.0.iter().all(|e| e.action == Action::Deny));
        let ok = list_of("bob", &recs[..1]);
        assert_eq!(ok.0.len(), 1);
        assert_eq!(ok.default_action(), Action::Deny);
    }

    fn directive(identity: &str, allow: bool, rule: &str, line: u32) -> AccessDirective {
        AccessDirective {
            identity: identity.into(),
            allow,
            rule: rule.into(),
            location: warren_config::Location {
                file: "server.conf".into(),
                line: Some(line),
            },
        }
    }

    #[test]
    fn directives_group_by_identity_in_order() {
        let lines = [
            directive("alice", true, "10.0.0.1:22/tcp", 1),
            directive("bob", false, "10.0.0.0/8", 2),
            directive("alice", false, "10.0.0.0/8", 3),
        ];
        let m = from_directives(&lines).expect("rules");
        assert_eq!(m.len(), 2);
        assert_eq!(m["alice"].list().0.len(), 2);
        assert_eq!(m["alice"].list().0[0].action, Action::Allow);
        let bad = [directive("a", true, "10.0.0.1:99999", 7)];
        let e = from_directives(&bad).expect_err("bad rule").report();
        assert!(
            e.contains("server.conf:7")
                && e.contains("\"10.0.0.1:99999\"")
                && e.contains("expected CIDR"),
            "{e}"
        );
    }
}
