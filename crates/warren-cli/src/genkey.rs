//! `warren pki genkey`: the key files OpenVPN makes with `--genkey`, byte for byte the same
//! format (so either program reads the other's): tls-crypt-v2 server and client keys, and
//! the static key of `tls-crypt` / `tls-auth`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use warren_crypto::{Metadata, StaticKey, TlsCryptV2ClientKey, TlsCryptV2ServerKey};
use warren_io::OsRng;
use warren_server::state::{wall_now, write_atomic};
use zeroize::Zeroizing;

/// `warren pki genkey KIND [FILE]`
#[derive(Debug, Args)]
pub struct GenkeyArgs {
    /// What to make (OpenVPN's `--genkey` names).
    #[arg(value_enum)]
    pub kind: KeyKind,
    /// Where to write it (mode 0600; never over an existing file). Without it the key is
    /// printed, as `openvpn --genkey` does.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// tls-crypt-v2-client: the server key that wraps the new client key (OpenVPN's
    /// `--tls-crypt-v2 FILE` in `openvpn --tls-crypt-v2 srv.key --genkey tls-crypt-v2-client`).
    #[arg(long, visible_alias = "tls-crypt-v2", value_name = "FILE")]
    pub server_key: Option<PathBuf>,
    /// tls-crypt-v2-client: user metadata, base64, that the server sees when the client
    /// connects (default: the creation time, as OpenVPN does). Also accepted as a second
    /// positional argument, OpenVPN's order.
    #[arg(long, value_name = "BASE64")]
    pub metadata: Option<String>,
    #[arg(value_name = "BASE64", hide = true, conflicts_with = "metadata")]
    pub metadata_positional: Option<String>,
}

/// The key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyKind {
    /// A tls-crypt-v2 server key (`tls-crypt-v2 FILE` in server.conf).
    #[value(name = "tls-crypt-v2-server")]
    TlsCryptV2Server,
    /// A tls-crypt-v2 client key, wrapped by --server-key (`tls-crypt-v2 FILE` in a client
    /// profile; one per client).
    #[value(name = "tls-crypt-v2-client")]
    TlsCryptV2Client,
    /// A static key for `tls-crypt` or `tls-auth` (the same format as `secret`).
    #[value(name = "tls-crypt", alias = "tls-auth", alias = "secret")]
    TlsCrypt,
}

pub fn run(a: GenkeyArgs) -> Result<()> {
    if let Some(f) = &a.file
        && f.exists()
    {
        bail!(
            "{} exists; warren does not overwrite keys (everything made with it depends on it): \
             remove it first, or give another file",
            f.display()
        );
    }
    let metadata = a.metadata.as_ref().or(a.metadata_positional.as_ref());
    if a.kind != KeyKind::TlsCryptV2Client && (a.server_key.is_some() || metadata.is_some()) {
        bail!("--server-key and --metadata only go with tls-crypt-v2-client");
    }
    let mut rng = OsRng::new().context("the kernel random generator (getrandom) is unavailable")?;
    let pem = Zeroizing::new(match a.kind {
        KeyKind::TlsCryptV2Server => TlsCryptV2ServerKey::generate(&mut rng).to_pem(),
        KeyKind::TlsCrypt => StaticKey::generate(&mut rng).to_pem(),
        KeyKind::TlsCryptV2Client => {
            let Some(server_file) = &a.server_key else {
                bail!(
                    "a tls-crypt-v2 client key is wrapped by the server key: add --server-key \
                     FILE (made with `warren pki genkey tls-crypt-v2-server FILE` or `openvpn \
                     --genkey tls-crypt-v2-server FILE`)"
                );
            };
            let server = read_server_key(server_file)?;
            let meta = match metadata {
                Some(b64) => Metadata::user_from_base64(b64).context("--metadata")?,
                // tls_crypt.c tls_crypt_v2_write_client_key_file: the creation time.
                None => Metadata::Timestamp(
                    wall_now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or_default(),
                ),
            };
            TlsCryptV2ClientKey::generate(&server, &meta, &mut rng)
                .context("wrapping the client key")?
                .to_pem()
        }
    });
    match &a.file {
        Some(f) => {
            write_atomic(f, pem.as_bytes(), 0o600)?;
            eprintln!("wrote {} ({})", f.display(), a.kind.describe());
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(pem.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the key to stdout")?;
        }
    }
    Ok(())
}

fn read_server_key(path: &Path) -> Result<TlsCryptV2ServerKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    TlsCryptV2ServerKey::parse(&text)
        .with_context(|| format!("{}: not a tls-crypt-v2 server key", path.display()))
}

impl KeyKind {
    fn describe(self) -> &'static str {
        match self {
            KeyKind::TlsCryptV2Server => "tls-crypt-v2 server key",
            KeyKind::TlsCryptV2Client => "tls-crypt-v2 client key",
            KeyKind::TlsCrypt => "tls-crypt/tls-auth static key",
        }
    }
}
