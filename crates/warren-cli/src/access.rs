//! Access rules on the command line: `--allow`/`--deny` for `warren user set` and
//! `warren group set`, and `warren group add|del|list`.

use std::path::Path;

use anyhow::{Result, bail};
use clap::{Arg, ArgAction, ArgMatches, Args, Subcommand};
use warren_openvpn::access::{AccessEntry, AccessRule, Action};
use warren_store::{AccessOwner, AccessRecord, Store};

use warren_server::state::{StateOptions, ensure_state, open_state, open_state_for_reading};

use crate::args::StateDirArg;
use crate::pki::print_table;

/// How the rules are read, for `--help` of `warren user set` and `warren group set`.
pub const RULES_HELP: &str = "Access rules: --allow RULE and --deny RULE (repeatable) append \
to the list in the order given; --clear-access empties it first. RULE is \
CIDR[:PORT|:LO-HI][/tcp|/udp|/icmp], e.g. 10.0.0.0/24, 192.168.1.10:443/tcp, \
10.1.0.0/16:5000-5100/udp, fd00:1::/64, [fd00::7]:22/tcp (a port without a protocol means \
TCP and UDP). A client's packets are checked against its user's rules, then its groups' \
rules (in the order it joined them): the first rule that matches decides. When none \
matches, the packet is dropped if the list has any allow rule, and passes otherwise (a \
list of deny rules only blocks those destinations). Running servers apply a change to \
connected clients within a second.";

/// `--allow`, `--deny` (in the order given) and `--clear-access`.
#[derive(Debug, Clone, Default)]
pub struct AccessArgs {
    pub entries: Vec<AccessEntry>,
    pub clear: bool,
}

impl AccessArgs {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.clear
    }

    /// Stores the change for `owner`.
    pub fn apply(&self, store: &dyn Store, owner: &AccessOwner) -> Result<()> {
        let records: Vec<AccessRecord> = self
            .entries
            .iter()
            .map(|e| AccessRecord {
                allow: e.action == Action::Allow,
                rule: e.rule.to_string(),
            })
            .collect();
        store.set_access_rules(owner, self.clear, &records)?;
        Ok(())
    }
}

fn parse_rule(s: &str) -> Result<AccessRule, warren_openvpn::access::AccessRuleError> {
    s.parse()
}

impl clap::FromArgMatches for AccessArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut found: Vec<(usize, AccessEntry)> = Vec::new();
        for (id, action) in [("allow", Action::Allow), ("deny", Action::Deny)] {
            if let (Some(rules), Some(at)) = (m.get_many::<AccessRule>(id), m.indices_of(id)) {
                found.extend(at.zip(rules).map(|(i, rule)| {
                    (
                        i,
                        AccessEntry {
                            action,
                            rule: *rule,
                        },
                    )
                }));
            }
        }
        // The command line's order is the rules' order (first match wins).
        found.sort_by_key(|(i, _)| *i);
        Ok(AccessArgs {
            entries: found.into_iter().map(|(_, e)| e).collect(),
            clear: m.get_flag("clear_access"),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for AccessArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(
            Arg::new("allow")
                .long("allow")
                .value_name("RULE")
                .action(ArgAction::Append)
                .value_parser(parse_rule)
                .help("Append a rule that allows these destinations (repeatable; see above)"),
        )
        .arg(
            Arg::new("deny")
                .long("deny")
                .value_name("RULE")
                .action(ArgAction::Append)
                .value_parser(parse_rule)
                .help("Append a rule that refuses these destinations (repeatable)"),
        )
        .arg(
            Arg::new("clear_access")
                .long("clear-access")
                .action(ArgAction::SetTrue)
                .help("Remove every access rule first (alone: everything allowed again)"),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// `warren user set`'s group flags.
#[derive(Debug, Clone, Args)]
pub struct MembershipArgs {
    /// Add the user to this group (repeatable; its rules come after the user's own, in the
    /// order the groups were joined).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Take the user out of every group first.
    #[arg(long)]
    pub clear_groups: bool,
}

impl MembershipArgs {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && !self.clear_groups
    }
}

/// `warren user set` for rules and groups: applies both; the caller said what else changed.
pub fn set_user(
    store: &dyn Store,
    name: &str,
    access: &AccessArgs,
    groups: &MembershipArgs,
) -> Result<()> {
    if !groups.is_empty() {
        store.set_user_groups(name, groups.clear_groups, &groups.groups)?;
    }
    if !access.is_empty() {
        access.apply(store, &AccessOwner::User(name.to_owned()))?;
    }
    Ok(())
}

/// The lines `warren user show` prints about access.
pub fn describe_user(store: &dyn Store, name: &str) -> Result<Vec<String>> {
    let own = store.access_rules(&AccessOwner::User(name.to_owned()))?;
    let groups = store.user_groups(name)?;
    let mut out = vec![format!(
        "groups:      {}",
        if groups.is_empty() {
            "-".to_owned()
        } else {
            groups.join(", ")
        }
    )];
    let all = store.effective_access(name)?;
    if all.is_empty() {
        out.push("access:      everything (no rules)".to_owned());
        return Ok(out);
    }
    out.push(format!(
        "access:      {} rule(s), {} of them the user's own; first match wins, else {}",
        all.len(),
        own.len(),
        if all.iter().any(|r| r.allow) {
            "deny"
        } else {
            "allow"
        }
    ));
    for r in &all {
        out.push(format!(
            "  {} {}",
            if r.allow { "allow" } else { "deny " },
            r.rule
        ));
    }
    Ok(out)
}

/// `warren group ...`
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Add a group (give users to it with `warren user set NAME --group GROUP`).
    Add { name: String },
    /// Delete a group: its rules and memberships go with it.
    Del { name: String },
    /// List groups, their members and rules.
    List,
    /// Change a group's access rules.
    #[command(long_about = RULES_HELP)]
    Set {
        name: String,
        #[command(flatten)]
        access: AccessArgs,
    },
}

pub fn run_group(args: GroupArgs) -> Result<()> {
    let dir: &Path = &args.state.state_dir;
    match args.command {
        GroupCommand::Add { name } => {
            let state = ensure_state(dir, &StateOptions::default())?;
            state.store.add_group(&name)?;
            eprintln!("added group \"{name}\"");
        }
        GroupCommand::Del { name } => {
            let state = open_state(dir)?;
            state.store.delete_group(&name)?;
            eprintln!("deleted group \"{name}\"");
        }
        GroupCommand::List => {
            let state = open_state_for_reading(dir)?;
            let rows: Vec<[String; 3]> = state
                .store
                .groups()?
                .into_iter()
                .map(|g| {
                    let rules: Vec<String> = g
                        .rules
                        .iter()
                        .map(|r| format!("{} {}", if r.allow { "allow" } else { "deny" }, r.rule))
                        .collect();
                    [
                        g.name,
                        if g.members.is_empty() {
                            "-".to_owned()
                        } else {
                            g.members.join(",")
                        },
                        if rules.is_empty() {
                            "-".to_owned()
                        } else {
                            rules.join("; ")
                        },
                    ]
                })
                .collect();
            print_table(&["GROUP", "MEMBERS", "RULES"], &rows);
        }
        GroupCommand::Set { name, access } => {
            if access.is_empty() {
                bail!("nothing to change: give --allow, --deny or --clear-access");
            }
            let state = open_state(dir)?;
            access.apply(&*state.store, &AccessOwner::Group(name.clone()))?;
            eprintln!("updated the access rules of group \"{name}\"");
        }
    }
    Ok(())
}
