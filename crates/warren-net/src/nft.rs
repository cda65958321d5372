//! The `nft` binary, shared by the server's NAT ([`crate::Nat`]) and the client's kill
//! switch ([`crate::KillSwitch`]): each owns one `inet` table of warren's own, created,
//! replaced and deleted through `nft -j -f -` batches (one batch is one kernel transaction:
//! all of it or nothing), and looks only at table names of others.
use std::borrow::Cow;
use std::io;
use std::path::PathBuf;

use nftables::helper::NftablesError;
use nftables::schema::{NfCmd, NfListObject, NfObject, Nftables, Table};
use nftables::types::NfFamily;
use tracing::debug;

/// How a run of `nft` failed, before each user puts it in its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NftFailure {
    /// No `nft` binary.
    Missing,
    /// The kernel refused: CAP_NET_ADMIN is missing.
    Permission,
    /// Anything else, with `nft`'s message.
    Failed(String),
}

impl From<NftablesError> for NftFailure {
    fn from(e: NftablesError) -> NftFailure {
        match e {
            NftablesError::NftExecution { inner, .. }
                if inner.kind() == io::ErrorKind::NotFound =>
            {
                NftFailure::Missing
            }
            NftablesError::NftFailed { stderr, stdout, .. } => {
                let detail = if stderr.trim().is_empty() {
                    stdout.trim().to_owned()
                } else {
                    stderr.trim().to_owned()
                };
                let low = detail.to_ascii_lowercase();
                if low.contains("operation not permitted") || low.contains("permission denied") {
                    NftFailure::Permission
                } else {
                    NftFailure::Failed(detail)
                }
            }
            other => NftFailure::Failed(other.to_string()),
        }
    }
}

/// The `nft` program.
#[derive(Debug, Clone)]
pub(crate) struct Nft {
    bin: PathBuf,
}

impl Nft {
    /// `/usr/sbin/nft` or `/sbin/nft` if present, else `nft` from `PATH`.
    pub(crate) fn find() -> Nft {
        let bin = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("nft"));
        Nft { bin }
    }

    /// Runs one batch (`nft -j -f -`), logged at debug as the JSON it sends.
    pub(crate) fn apply(&self, batch: &Nftables<'_>) -> Result<(), NftFailure> {
        debug!(
            "nft -j -f - <<< {}",
            serde_json::to_string(batch).unwrap_or_default()
        );
        nftables::helper::apply_ruleset_with_args(
            batch,
            Some(&self.bin),
            nftables::helper::DEFAULT_ARGS,
        )
        .map_err(NftFailure::from)
    }

    /// Whether table `inet <name>` exists (`nft list tables`).
    pub(crate) fn inet_table_exists(&self, name: &str) -> Result<bool, NftFailure> {
        let tables =
            nftables::helper::get_current_ruleset_with_args(Some(&self.bin), &["list", "tables"])?;
        Ok(tables.objects.iter().any(|o| {
            matches!(o, NfObject::ListObject(NfListObject::Table(t))
                if t.family == NfFamily::INet && t.name == name)
        }))
    }

    /// Deletes table `inet <name>`; one that does not exist (never created, or deleted by
    /// hand) is no error.
    pub(crate) fn delete_inet_table(&self, name: &str) -> Result<(), NftFailure> {
        let batch = Nftables {
            objects: Cow::Owned(vec![NfObject::CmdObject(NfCmd::Delete(
                NfListObject::Table(inet_table(name)),
            ))]),
        };
        match self.apply(&batch) {
            Ok(()) => Ok(()),
            Err(e) => match self.inet_table_exists(name) {
                Ok(false) => Ok(()),
                _ => Err(e),
            },
        }
    }
}

/// `inet <name>` as an nftables object.
pub(crate) fn inet_table(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: Cow::Owned(name.to_owned()),
        handle: None,
    }
}
