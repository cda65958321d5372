//! The state directory: the built-in PKI, the tls-crypt key and the database.
//!
//! ```text
//! /var/lib/warren/            0700
//!   warren.db                 0600  users, certificates, revocations, leases (SQLite, WAL)
//!   tls-crypt.key             0600  OpenVPN static key V1
//!   pki/                      0700
//!     ca.crt  ca.key(0600)          the CA
//!     server.crt  server.key(0600)  this server's identity
//!     crl.pem                       revocations, for stock OpenVPN's `crl-verify`
//! ```
//!
//! Crash safety: every file is written to a temporary name, fsynced, renamed into place and
//! the directory fsynced, so a file is either the old or the new one. A certificate and its key
//! are a pair: both are first written as `NAME.key.next` and `NAME.crt.next`, then renamed key
//! first, certificate last. A `.crt.next` therefore only exists once both halves are complete,
//! and loading finishes an interrupted switch (rolls forward) or drops a half-written one (rolls
//! back). Database records of the CA and server certificates are written after the files and
//! re-added on load if a crash came in between.
//!
//! Fresh versus damaged: the first initialisation (or `pki import`) of an empty directory
//! starts by writing `.init-incomplete` and removes it as its last step. While that marker
//! exists, loading completes whatever is missing, so a crash at any point of the first run is
//! repaired by running again. Without the marker the state is initialised, and a missing CA
//! certificate or key, tls-crypt key or database (or an empty database next to a PKI) is
//! refused with the file's name and how to restore it: key material is never generated over
//! an existing state. Only a server certificate and key missing together are re-issued by the
//! CA (nothing is overwritten, and clients only check the CA).
//!
//! Concurrency: initialisation and loading run under an exclusive `flock` on `.lock` in the
//! directory, so concurrent first runs serialise: one creates, the others wait and load its
//! result.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use crate::error::{Context, Error, Result};
use warren_crypto::StaticKey;
use warren_io::OsRng;
use warren_pki::{CaOptions, Issued, LeafOptions, Pki, PrivateKeyPem, check_key_pair, inspect_pem};
use warren_store::{CertRecord, SqliteStore, Store, StoreError};

/// Where the state lives unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/warren";

/// How the state directory speaks to the person running the command: notices (waiting for
/// another process, an unsafe directory mode) and slow work (key generation). The binary
/// installs its own with [`set_console`]; without one, notices go to stderr and slow work
/// shows nothing.
pub trait Console: Send + Sync {
    fn notice(&self, line: &str);
    /// Runs `work` (once) while showing `what`.
    fn slow(&self, what: &str, work: &mut dyn FnMut());
}

static CONSOLE: OnceLock<&'static dyn Console> = OnceLock::new();

/// Installs the process's [`Console`] (the first call wins).
pub fn set_console(console: &'static dyn Console) {
    let _ = CONSOLE.set(console);
}

fn notice(line: &str) {
    match CONSOLE.get() {
        Some(c) => c.notice(line),
        None => eprintln!("{line}"),
    }
}

/// Runs `f`, shown by the console as `what` when it is `slow`.
fn slow_work<T>(what: &str, slow: bool, f: impl FnOnce() -> T) -> T {
    let Some(console) = CONSOLE.get().filter(|_| slow) else {
        return f();
    };
    let (mut f, mut out) = (Some(f), None);
    console.slow(what, &mut || out = f.take().map(|f| f()));
    match (out, f) {
        (Some(o), _) => o,
        (None, Some(f)) => f(),
        (None, None) => unreachable!("the work ran and returned"),
    }
}

/// What to create when the state directory is new.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// The CA; its common name defaults to `warren CA <random>`.
    pub ca: CaOptions,
    /// The server certificate's common name (and DNS SAN).
    pub server_name: String,
    /// The server certificate's key type and lifetime.
    pub server: LeafOptions,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            ca: CaOptions {
                common_name: String::new(),
                ..CaOptions::default()
            },
            server_name: "server".to_owned(),
            server: LeafOptions::default(),
        }
    }
}

/// A loaded state directory.
pub struct State {
    /// The directory.
    pub dir: PathBuf,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// This server's certificate, PEM.
    pub server_cert_pem: String,
    /// This server's private key, PEM.
    pub server_key_pem: PrivateKeyPem,
    /// The `tls-crypt` key.
    pub tls_crypt: StaticKey,
    /// The database.
    pub store: Arc<SqliteStore>,
    /// The CA, able to issue.
    pub pki: Pki,
    /// One line per thing created by this call (empty when everything existed).
    pub created: Vec<String>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("dir", &self.dir)
            .field("ca", &self.pki.info().common_name)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The wall clock (the binary is the one place that reads it).
#[allow(clippy::disallowed_methods)]
pub fn wall_now() -> SystemTime {
    SystemTime::now()
}

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        Layout {
            dir: dir.to_path_buf(),
        }
    }
    pub fn db(&self) -> PathBuf {
        self.dir.join("warren.db")
    }
    pub fn tls_crypt(&self) -> PathBuf {
        self.dir.join("tls-crypt.key")
    }
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
    pub fn ca_crt(&self) -> PathBuf {
        self.pki().join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.pki().join("ca.key")
    }
    pub fn server_crt(&self) -> PathBuf {
        self.pki().join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.pki().join("server.key")
    }
    pub fn crl(&self) -> PathBuf {
        self.pki().join("crl.pem")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join(LOCK)
    }
    pub fn incomplete(&self) -> PathBuf {
        self.dir.join(INCOMPLETE)
    }
}

/// The file that says "a first initialisation (or an import) started here and has not
/// finished": while it exists, whatever is missing is created; once the state is complete it is
/// removed, and from then on a missing file is an error, never a reason to make a new one.
const INCOMPLETE: &str = ".init-incomplete";
/// The lock file that serialises initialisation and loading between processes (`flock`).
const LOCK: &str = ".lock";

/// Why the state directory is being (re)built, from the [`INCOMPLETE`] marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Building {
    /// `pki init`, `user add` or the first `warren server`: every piece may be generated.
    Init,
    /// `pki import`: the CA comes from the import and is never generated here.
    Import,
}

impl Building {
    fn tag(self) -> &'static str {
        match self {
            Building::Init => "init",
            Building::Import => "import",
        }
    }
}

/// Holds the state directory's lock (released on drop, or when the process dies).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes the state directory's exclusive lock, waiting for another `warren` process that holds
/// it (one initialising the same directory, typically). Creates the directory.
pub fn lock_state(layout: &Layout) -> Result<StateLock> {
    create_private_dir(&layout.dir)?;
    warn_if_world_writable(layout);
    let path = layout.lock();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    let got = warren_io::flock::try_lock_exclusive(&file)
        .with_context(|| format!("locking {}", path.display()))?;
    if !got {
        notice(&format!(
            "waiting for another warren process using {}",
            layout.dir.display()
        ));
        warren_io::flock::lock_exclusive(&file)
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(StateLock { _file: file })
}

/// Warns (once per directory) when the state directory or `pki/` is writable by every user:
/// anyone could then replace the keys or the database.
fn warn_if_world_writable(layout: &Layout) {
    for d in [layout.dir.clone(), layout.pki()] {
        if let Ok(m) = fs::metadata(&d)
            && m.permissions().mode() & 0o002 != 0
        {
            notice(&format!(
                "warning: {} is writable by every user (mode {:o}): anyone on this machine can \
                 replace its keys or its database; fix it with `chmod 700 {}`",
                d.display(),
                m.permissions().mode() & 0o7777,
                d.display()
            ));
        }
    }
}

fn read_marker(layout: &Layout) -> Result<Option<Building>> {
    match fs::read_to_string(layout.incomplete()) {
        Ok(s) if s.trim() == Building::Import.tag() => Ok(Some(Building::Import)),
        Ok(_) => Ok(Some(Building::Init)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", layout.incomplete().display())),
    }
}

fn write_marker(layout: &Layout, what: Building) -> Result<()> {
    write_atomic(
        &layout.incomplete(),
        format!("{}\n", what.tag()).as_bytes(),
        0o600,
    )
}

fn remove_marker(layout: &Layout) -> Result<()> {
    let path = layout.incomplete();
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    File::open(&layout.dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", layout.dir.display()))
}

/// The files whose presence means the directory holds state (so nothing may be generated over
/// it), with their `.next` halves.
fn material(layout: &Layout) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for p in [
        layout.ca_crt(),
        layout.ca_key(),
        layout.server_crt(),
        layout.server_key(),
    ] {
        v.push(next_name(&p));
        v.push(p);
    }
    v.push(layout.tls_crypt());
    v.push(layout.crl());
    v
}

/// True when the directory holds no state at all: no key material and no database with
/// records in it (an empty database left by an interrupted older version counts as none).
fn is_fresh(layout: &Layout) -> Result<bool> {
    if material(layout).iter().any(|p| p.exists()) {
        return Ok(false);
    }
    let db = layout.db();
    match fs::metadata(&db) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading {}", db.display())),
        Ok(m) if m.len() == 0 => Ok(true),
        Ok(_) => {
            let store = SqliteStore::open(&db)
                .with_context(|| format!("opening the database {}", db.display()))?;
            Ok(store_is_empty(&store)?)
        }
    }
}

fn store_is_empty(store: &SqliteStore) -> Result<bool> {
    Ok(store.users()?.is_empty() && store.certs(&Default::default())?.is_empty())
}

/// The complaint about a state directory that lost pieces after its initialisation.
fn missing_report(layout: &Layout, problems: &[String]) -> Error {
    Error::StateIncomplete {
        dir: layout.dir.clone(),
        problems: problems.to_vec(),
    }
}

/// Checks that an initialised state directory still has everything (files only; the database
/// contents are checked once it is open). Returns whether the server pair is missing as a
/// whole (the CA may issue a new one: nothing is overwritten).
fn check_complete(layout: &Layout) -> Result<bool> {
    let mut problems = Vec::new();
    let (ca_crt, ca_key) = (layout.ca_crt().exists(), layout.ca_key().exists());
    match (ca_crt, ca_key) {
        (true, true) => {}
        (false, true) => problems.push(format!(
            "{} is missing (the CA key {} is still there): restore ca.crt from a backup, or \
             copy it from the <ca> block of any exported profile",
            layout.ca_crt().display(),
            layout.ca_key().display()
        )),
        (true, false) => problems.push(format!(
            "the CA key {} is missing: restore it from a backup (without it no certificate \
             can be issued or revoked)",
            layout.ca_key().display()
        )),
        (false, false) => problems.push(format!(
            "the CA ({} and {}) is missing: restore both from a backup; a new CA would lock \
             out every existing client",
            layout.ca_crt().display(),
            layout.ca_key().display()
        )),
    }
    if !layout.tls_crypt().exists() {
        problems.push(format!(
            "{} is missing: restore it from a backup, or copy it from the <tls-crypt> block of \
             any exported profile (a new key would lock out every existing client)",
            layout.tls_crypt().display()
        ));
    }
    let (srv_crt, srv_key) = (layout.server_crt().exists(), layout.server_key().exists());
    match (srv_crt, srv_key) {
        (false, true) => problems.push(format!(
            "{} is missing but its key {} exists: restore the certificate from a backup, or \
             remove the key to have the CA issue a new server certificate",
            layout.server_crt().display(),
            layout.server_key().display()
        )),
        (true, false) => problems.push(format!(
            "{} is missing: restore it from a backup, or remove {} too to have the CA issue a \
             new server certificate",
            layout.server_key().display(),
            layout.server_crt().display()
        )),
        _ => {}
    }
    if !layout.db().exists() {
        problems.push(format!(
            "the database {} is missing (users, certificates, revocations): restore it from a \
             backup",
            layout.db().display()
        ));
    }
    if problems.is_empty() {
        Ok(!srv_crt && !srv_key)
    } else {
        Err(missing_report(layout, &problems))
    }
}

/// Opens the state in `dir`, creating it when the directory is new (directory, database, CA,
/// server certificate, tls-crypt key, CRL). Idempotent, exclusive between processes (a second
/// process waits for the first and then uses its result) and safe to run again after a crash
/// at any point of the first initialisation. Once initialised, a missing CA, tls-crypt key or
/// database is an error naming the file: nothing is ever generated over existing state. What
/// was created is listed in [`State::created`].
pub fn ensure_state(dir: &Path, opts: &StateOptions) -> Result<State> {
    let layout = Layout::new(dir);
    let lock = lock_state(&layout)?;
    ensure_state_locked(&layout, opts, &lock, true)
}

/// [`ensure_state`] under a lock the caller already holds. Without `may_init` a fresh
/// directory is an error (commands that only use an existing state).
fn ensure_state_locked(
    layout: &Layout,
    opts: &StateOptions,
    _lock: &StateLock,
    may_init: bool,
) -> Result<State> {
    let now = wall_now();
    let mut created = Vec::new();

    // Finish or undo an interrupted pair switch first: that is recovery, not creation.
    recover_pair(&layout.ca_key(), &layout.ca_crt())?;
    recover_pair(&layout.server_key(), &layout.server_crt())?;

    let building = match read_marker(layout)? {
        Some(b) => Some(b),
        None if is_fresh(layout)? => {
            if !may_init {
                return Err(Error::NoPki(layout.dir.clone()));
            }
            create_private_dir(&layout.pki())?;
            write_marker(layout, Building::Init)?;
            Some(Building::Init)
        }
        None => None,
    };
    let new_server_ok = match building {
        Some(_) => true,
        None => check_complete(layout)?,
    };

    if !layout.db().exists() {
        created.push(format!("state directory {}", layout.dir.display()));
    }
    let store = open_store(layout)?;
    if building.is_none() && store_is_empty(&store)? {
        return Err(missing_report(
            layout,
            &[format!(
                "the database {} is empty although the PKI exists (no users, no certificates): \
                 restore it from a backup",
                layout.db().display()
            )],
        ));
    }

    // The CA.
    let mut new_ca = false;
    let have_ca = layout.ca_crt().exists() && (building.is_none() || layout.ca_key().exists());
    let pki = if have_ca {
        load_ca(layout)?
    } else {
        match building {
            Some(Building::Init) => {}
            Some(Building::Import) => return Err(Error::ImportInterrupted(layout.dir.clone())),
            None => unreachable!("check_complete guarantees the CA files"),
        }
        let pki = generate_ca(layout, &opts.ca, now)?;
        new_ca = true;
        created.push(format!(
            "CA \"{}\" ({}, valid until {}) in {}",
            pki.info().common_name,
            pki.info().key_description,
            fmt_date(pki.info().not_after),
            layout.ca_crt().display()
        ));
        pki
    };
    record_cert(
        &*store,
        &CertRecord::from_info(pki.info(), Some(pki.cert_pem().to_owned())),
    )?;

    // The server certificate: the CA can always issue a new one, so a server pair missing as a
    // whole is re-issued (nothing is overwritten; clients only check the CA).
    // A server pair left over from before a CA made in this (unfinished first) run cannot be
    // signed by it: replace it too.
    let have_server = layout.server_crt().exists()
        && !new_ca
        && (building.is_none() || layout.server_key().exists());
    let (server_cert_pem, server_key_pem) = if have_server {
        load_server(layout, &pki)?
    } else {
        debug_assert!(new_server_ok);
        let mut rng =
            OsRng::new().context("the kernel random generator (getrandom) is unavailable")?;
        let leaf = opts.server;
        let issued = slow_work(
            &format!("generating the server key ({})", leaf.algorithm),
            leaf.algorithm.is_slow(),
            || pki.issue_server(&opts.server_name, &leaf, now, &mut rng),
        )
        .context("issuing the server certificate")?;
        install_server(layout, &issued)?;
        created.push(format!(
            "server certificate \"{}\" ({}, valid until {})",
            issued.info.common_name,
            issued.info.key_description,
            fmt_date(issued.info.not_after)
        ));
        (issued.cert_pem.clone(), issued.key_pem.clone())
    };
    let server_info = inspect_pem(&server_cert_pem, "server certificate")?;
    record_cert(
        &*store,
        &CertRecord::from_info(&server_info, Some(server_cert_pem.clone())),
    )?;

    // The tls-crypt key (only ever generated while building: see check_complete).
    let tls_crypt = if layout.tls_crypt().exists() {
        load_tls_crypt(layout)?
    } else {
        let mut rng =
            OsRng::new().context("the kernel random generator (getrandom) is unavailable")?;
        let key = StaticKey::generate(&mut rng);
        let text = zeroize::Zeroizing::new(key.to_pem());
        write_atomic(&layout.tls_crypt(), text.as_bytes(), 0o600)?;
        created.push(format!("tls-crypt key {}", layout.tls_crypt().display()));
        key
    };

    let state = State {
        dir: layout.dir.clone(),
        ca_pem: pki.cert_pem().to_owned(),
        server_cert_pem,
        server_key_pem,
        tls_crypt,
        store,
        pki,
        created,
    };
    if !layout.crl().exists() {
        state.write_crl(now)?;
    }
    // Everything is in place (and synced): from now on a missing piece is an error.
    if building.is_some() {
        remove_marker(layout)?;
    }
    Ok(state)
}

fn generate_ca(layout: &Layout, opts: &CaOptions, now: SystemTime) -> Result<Pki> {
    let mut rng = OsRng::new().context("the kernel random generator (getrandom) is unavailable")?;
    let mut ca = opts.clone();
    if ca.common_name.is_empty() {
        let mut tag = [0u8; 4];
        warren_core::Rng::fill(&mut rng, &mut tag);
        ca.common_name = format!("warren CA {}", hex4(&tag));
    }
    let pki = slow_work(
        &format!("generating the CA key ({})", ca.algorithm),
        ca.algorithm.is_slow(),
        || Pki::generate(&ca, now, &mut rng),
    )
    .context("creating the CA")?;
    write_pair(
        &layout.ca_key(),
        pki.key_pem().as_str(),
        &layout.ca_crt(),
        pki.cert_pem(),
    )?;
    Ok(pki)
}

/// Opens an existing state directory without creating anything; the error says how to create
/// one.
pub fn open_state(dir: &Path) -> Result<State> {
    let layout = Layout::new(dir);
    if !dir.exists() {
        return Err(Error::NoPki(layout.dir.clone()));
    }
    let lock = lock_state(&layout)?;
    ensure_state_locked(&layout, &StateOptions::default(), &lock, false)
}

/// Opens an existing state for a command that only reads it (`user list`, `user show`,
/// `pki list`, `profile export`): like [`open_state`] when the directory is writable (so it
/// also finishes an interrupted first run), and read-only, without creating, repairing or
/// recording anything, on a directory this process cannot write (a read-only mount, or
/// another owner's directory).
pub fn open_state_for_reading(dir: &Path) -> Result<State> {
    let layout = Layout::new(dir);
    if !dir.exists() {
        return open_state(dir);
    }
    match lock_state(&layout) {
        Ok(lock) => ensure_state_locked(&layout, &StateOptions::default(), &lock, false),
        Err(e) if e.is_permission_denied() => open_state_read_only(&layout),
        Err(e) => Err(e),
    }
}

/// [`open_state_for_reading`] on a directory that cannot be written.
fn open_state_read_only(layout: &Layout) -> Result<State> {
    // Wait for a writer that is initialising (if the lock file can be opened at all).
    let _lock = match File::open(layout.lock()) {
        Ok(f) => {
            warren_io::flock::lock_shared(&f)
                .with_context(|| format!("locking {}", layout.lock().display()))?;
            Some(f)
        }
        Err(_) => None,
    };
    let needs_writer = |why| Error::NeedsWriter {
        dir: layout.dir.clone(),
        why,
    };
    if read_marker(layout)?.is_some() {
        return Err(needs_writer("holds an unfinished first initialisation"));
    }
    if next_name(&layout.ca_crt()).exists() || next_name(&layout.server_crt()).exists() {
        return Err(needs_writer("holds an interrupted certificate switch"));
    }
    if is_fresh_read_only(layout)? {
        return Err(Error::NoPki(layout.dir.clone()));
    }
    if check_complete(layout)? {
        return Err(missing_report(
            layout,
            &[format!(
                "the server certificate and key ({}, {}) are missing: run `warren pki init` as a \
                 user who can write the directory to have the CA issue new ones",
                layout.server_crt().display(),
                layout.server_key().display()
            )],
        ));
    }
    let store = SqliteStore::open_read_only(&layout.db())
        .with_context(|| format!("opening the database {} read-only", layout.db().display()))?;
    if store_is_empty(&store)? {
        return Err(missing_report(
            layout,
            &[format!(
                "the database {} is empty although the PKI exists (no users, no certificates): \
                 restore it from a backup",
                layout.db().display()
            )],
        ));
    }
    let pki = load_ca(layout)?;
    let (server_cert_pem, server_key_pem) = load_server(layout, &pki)?;
    let tls_crypt = load_tls_crypt(layout)?;
    Ok(State {
        dir: layout.dir.clone(),
        ca_pem: pki.cert_pem().to_owned(),
        server_cert_pem,
        server_key_pem,
        tls_crypt,
        store: Arc::new(store),
        pki,
        created: Vec::new(),
    })
}

/// [`is_fresh`] without creating or migrating anything.
fn is_fresh_read_only(layout: &Layout) -> Result<bool> {
    if material(layout).iter().any(|p| p.exists()) {
        return Ok(false);
    }
    match fs::metadata(layout.db()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading {}", layout.db().display())),
        Ok(m) if m.len() == 0 => Ok(true),
        Ok(_) => Ok(false),
    }
}

/// Starts a `pki import` into `dir`: takes the lock and checks that the directory holds no
/// state (or an interrupted import of its own). Finish with [`finish_import`].
pub fn begin_import(dir: &Path) -> Result<StateLock> {
    let layout = Layout::new(dir);
    let lock = lock_state(&layout)?;
    if layout.ca_crt().exists() {
        return Err(Error::ImportTarget {
            dir: dir.to_owned(),
            why: "has a CA; import into a new state directory (--state-dir DIR), or move the \
                  old one away first",
        });
    }
    // An interrupted first run or import made nothing that was ever used: import over it.
    if read_marker(&layout)?.is_none() && !is_fresh(&layout)? {
        return Err(Error::ImportTarget {
            dir: dir.to_owned(),
            why: "holds state (a database or keys) but no CA; import into a new state \
                  directory (--state-dir DIR)",
        });
    }
    create_private_dir(&layout.pki())?;
    write_marker(&layout, Building::Import)?;
    Ok(lock)
}

/// Completes an import started with [`begin_import`] once its database records and CA files
/// are written (server certificate if none was imported, tls-crypt key, CRL).
pub fn finish_import(dir: &Path, lock: &StateLock) -> Result<State> {
    ensure_state_locked(&Layout::new(dir), &StateOptions::default(), lock, true)
}

impl State {
    /// Paths inside this state directory.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.dir)
    }

    /// Issues a client certificate for `name` (slow keys are shown by the [`Console`]). The caller
    /// records it ([`CertRecord::from_issued`]), usually in the same transaction as the user.
    pub fn issue_client(&self, name: &str, leaf: &LeafOptions, now: SystemTime) -> Result<Issued> {
        let mut rng = OsRng::new().context("getrandom")?;
        let issued = slow_work(
            &format!("generating a {} key for {name}", leaf.algorithm),
            leaf.algorithm.is_slow(),
            || self.pki.issue_client(name, leaf, now, &mut rng),
        )?;
        Ok(issued)
    }

    /// Regenerates `pki/crl.pem` from the database's revocations; returns the PEM.
    pub fn write_crl(&self, now: SystemTime) -> Result<String> {
        self.write_crl_days(now, warren_pki::DEFAULT_CRL_DAYS)
    }

    /// Like [`State::write_crl`] with an explicit `nextUpdate` distance.
    pub fn write_crl_days(&self, now: SystemTime, days: u32) -> Result<String> {
        let revoked = self.store.revocations()?;
        let number = self.store.next_crl_number()?;
        let crl = self.pki.crl_pem(&revoked, number, now, days)?;
        write_atomic(&self.layout().crl(), crl.as_bytes(), 0o644)?;
        Ok(crl)
    }

    /// Makes `issued` this server's certificate (atomically replacing the old pair).
    pub fn install_server(&mut self, issued: &Issued) -> Result<()> {
        install_server(&self.layout(), issued)?;
        record_cert(
            &*self.store,
            &CertRecord::from_info(&issued.info, Some(issued.cert_pem.clone())),
        )?;
        self.server_cert_pem = issued.cert_pem.clone();
        self.server_key_pem = issued.key_pem.clone();
        Ok(())
    }
}

/// Opens (creating) the directory and the database only: what `pki import` needs before a CA
/// exists.
pub fn open_store(layout: &Layout) -> Result<Arc<SqliteStore>> {
    create_private_dir(&layout.dir)?;
    create_private_dir(&layout.pki())?;
    let store = SqliteStore::open(&layout.db())
        .with_context(|| format!("opening the database {}", layout.db().display()))?;
    Ok(Arc::new(store))
}

fn create_private_dir(dir: &Path) -> Result<()> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(e).with_context(|| {
            format!(
                "cannot create {}: permission denied (run as root, or pass --state-dir DIR)",
                dir.display()
            )
        }),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
}

fn load_ca(layout: &Layout) -> Result<Pki> {
    let cert = read(&layout.ca_crt())?;
    let key = PrivateKeyPem::new(read(&layout.ca_key())?);
    Pki::from_pem(&cert, key.as_str())
        .with_context(|| format!("loading the CA from {}", layout.pki().display()))
}

fn load_server(layout: &Layout, pki: &Pki) -> Result<(String, PrivateKeyPem)> {
    let cert = read(&layout.server_crt())?;
    let key = PrivateKeyPem::new(read(&layout.server_key())?);
    let what = layout.server_crt().display().to_string();
    check_key_pair(&cert, key.as_str(), &what)?;
    pki.verify_issued(&cert, &what)?;
    Ok((cert, key))
}

fn load_tls_crypt(layout: &Layout) -> Result<StaticKey> {
    let text = zeroize::Zeroizing::new(read(&layout.tls_crypt())?);
    StaticKey::parse(&text).with_context(|| format!("reading {}", layout.tls_crypt().display()))
}

fn install_server(layout: &Layout, issued: &Issued) -> Result<()> {
    write_pair(
        &layout.server_key(),
        issued.key_pem.as_str(),
        &layout.server_crt(),
        &issued.cert_pem,
    )
}

/// Adds a certificate record unless the serial is already there.
fn record_cert(store: &dyn Store, rec: &CertRecord) -> Result<()> {
    match store.add_cert(rec) {
        Ok(()) | Err(StoreError::CertExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn next_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".next");
    PathBuf::from(s)
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, fsync,
/// rename, fsync of the directory. `mode` applies to the new file.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    // A bare file name's parent is "", which cannot be opened for the directory fsync.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // An existing temporary file keeps its old mode: set it explicitly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Replaces a key and its certificate so that a crash never leaves a mismatched pair (see the
/// module docs).
fn write_pair(key_path: &Path, key_pem: &str, crt_path: &Path, crt_pem: &str) -> Result<()> {
    let key_next = next_name(key_path);
    let crt_next = next_name(crt_path);
    write_atomic(&key_next, key_pem.as_bytes(), 0o600)?;
    write_atomic(&crt_next, crt_pem.as_bytes(), 0o644)?;
    finish_pair(key_path, crt_path)
}

fn finish_pair(key_path: &Path, crt_path: &Path) -> Result<()> {
    let key_next = next_name(key_path);
    let crt_next = next_name(crt_path);
    if key_next.exists() {
        fs::rename(&key_next, key_path)
            .with_context(|| format!("renaming {}", key_next.display()))?;
    }
    fs::rename(&crt_next, crt_path).with_context(|| format!("renaming {}", crt_next.display()))?;
    let dir = crt_path.parent().unwrap_or_else(|| Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Completes or undoes an interrupted [`write_pair`].
fn recover_pair(key_path: &Path, crt_path: &Path) -> Result<()> {
    if next_name(crt_path).exists() {
        finish_pair(key_path, crt_path)
    } else {
        let key_next = next_name(key_path);
        if key_next.exists() {
            fs::remove_file(&key_next)
                .with_context(|| format!("removing {}", key_next.display()))?;
        }
        Ok(())
    }
}

fn hex4(b: &[u8; 4]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `2028-03-01` (UTC).
pub fn fmt_date(t: SystemTime) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(warren_pki::to_unix(t))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_is_idempotent_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("state");
        let s1 = ensure_state(&d, &StateOptions::default()).expect("create");
        assert!(s1.created.len() >= 4, "{:?}", s1.created);
        assert!(s1.pki.info().common_name.starts_with("warren CA "));
        for (f, mode) in [
            ("warren.db", 0o600),
            ("tls-crypt.key", 0o600),
            ("pki/ca.key", 0o600),
            ("pki/server.key", 0o600),
            ("pki/ca.crt", 0o644),
            ("pki", 0o700),
            ("", 0o700),
        ] {
            let m = fs::metadata(d.join(f)).expect("stat").permissions().mode() & 0o777;
            assert_eq!(m, mode, "{f}");
        }
        let s2 = ensure_state(&d, &StateOptions::default()).expect("reopen");
        assert!(s2.created.is_empty(), "{:?}", s2.created);
        assert_eq!(s2.ca_pem, s1.ca_pem);
        assert_eq!(s2.server_cert_pem, s1.server_cert_pem);
        assert_eq!(s2.tls_crypt, s1.tls_crypt);
        // The CA and server certificates are in the database.
        assert_eq!(s2.store.certs(&Default::default()).expect("list").len(), 2);
        // warren-openvpn accepts the server identity.
        warren_openvpn::tls::server_config(
            &s2.ca_pem,
            &s2.server_cert_pem,
            s2.server_key_pem.as_str(),
            &Default::default(),
        )
        .expect("server_config");
        assert!(open_state(&dir.path().join("none")).is_err());
    }

    #[test]
    fn interrupted_pair_writes_recover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("state");
        let s = ensure_state(&d, &StateOptions::default()).expect("create");
        let layout = s.layout();
        let old_cert = s.server_cert_pem.clone();
        drop(s);

        // Crash after the new key was written but before the certificate: rolled back.
        fs::write(next_name(&layout.server_key()), "junk").expect("write");
        let s = ensure_state(&d, &StateOptions::default()).expect("recover");
        assert_eq!(s.server_cert_pem, old_cert);
        assert!(!next_name(&layout.server_key()).exists());

        // Crash after both halves were written, and the key renamed: rolled forward.
        let mut rng = OsRng::new().expect("rng");
        let new = s
            .pki
            .issue_server("server", &LeafOptions::default(), wall_now(), &mut rng)
            .expect("issue");
        drop(s);
        write_atomic(&layout.server_key(), new.key_pem.as_str().as_bytes(), 0o600).expect("w");
        write_atomic(
            &next_name(&layout.server_crt()),
            new.cert_pem.as_bytes(),
            0o644,
        )
        .expect("w");
        let s = ensure_state(&d, &StateOptions::default()).expect("recover");
        assert_eq!(s.server_cert_pem, new.cert_pem);

        // A CA key without its certificate inside an unfinished first run (the marker is
        // there: nothing was ever handed out) is replaced.
        let d2 = dir.path().join("fresh");
        create_private_dir(&d2.join("pki")).expect("mkdir");
        fs::write(d2.join("pki/ca.key"), "half").expect("write");
        fs::write(d2.join(INCOMPLETE), "init\n").expect("write");
        ensure_state(&d2, &StateOptions::default()).expect("create over leftovers");
        assert!(!d2.join(INCOMPLETE).exists());

        // The same key without the marker is an existing CA that lost its certificate: it is
        // kept, and the error says which file is missing.
        let d3 = dir.path().join("lost");
        create_private_dir(&d3.join("pki")).expect("mkdir");
        fs::write(d3.join("pki/ca.key"), "precious").expect("write");
        let err = ensure_state(&d3, &StateOptions::default())
            .expect_err("must refuse")
            .report();
        assert!(err.contains("ca.crt is missing"), "{err}");
        assert_eq!(
            fs::read_to_string(d3.join("pki/ca.key")).expect("read"),
            "precious"
        );
        assert!(!d3.join("pki/ca.crt").exists());
    }

    /// Every crash point of a first run (simulated by deleting what a later step made, with the
    /// marker still there) is completed by the next run; the same loss after the first run
    /// completed is refused and nothing is regenerated.
    #[test]
    fn lost_files_are_refused_but_unfinished_first_runs_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (what, files) in [
            ("ca.crt", &["pki/ca.crt"][..]),
            ("CA key", &["pki/ca.key"][..]),
            ("the CA", &["pki/ca.crt", "pki/ca.key"][..]),
            ("tls-crypt.key", &["tls-crypt.key"][..]),
            (
                "warren.db",
                &["warren.db", "warren.db-wal", "warren.db-shm"][..],
            ),
            ("server.key", &["pki/server.key"][..]),
        ] {
            let d = dir.path().join(what.replace(' ', "_"));
            let s = ensure_state(&d, &StateOptions::default()).expect("create");
            let ca = s.ca_pem.clone();
            drop(s);
            for f in files {
                let _ = fs::remove_file(d.join(f));
            }
            let keep: Vec<(String, Option<Vec<u8>>)> =
                ["pki/ca.key", "pki/ca.crt", "tls-crypt.key"]
                    .iter()
                    .map(|f| (f.to_string(), fs::read(d.join(f)).ok()))
                    .collect();
            let err = ensure_state(&d, &StateOptions::default())
                .expect_err(what)
                .report();
            assert!(err.contains(what), "{what}: {err}");
            assert!(err.contains("backup"), "{what}: {err}");
            let err = open_state(&d).expect_err(what).report();
            assert!(err.contains(what), "{what}: {err}");
            for (f, before) in &keep {
                assert_eq!(&fs::read(d.join(f)).ok(), before, "{what}: {f} changed");
            }
            // The same loss during an unfinished first run: completed.
            fs::write(d.join(INCOMPLETE), "init\n").expect("marker");
            let s = ensure_state(&d, &StateOptions::default()).expect("complete");
            assert!(!s.created.is_empty(), "{what}");
            if !files.iter().any(|f| f.starts_with("pki/ca")) {
                assert_eq!(s.ca_pem, ca, "{what}: the CA changed");
            }
            assert!(!d.join(INCOMPLETE).exists());
        }

        // An empty database next to the PKI is refused too.
        let d = dir.path().join("emptydb");
        drop(ensure_state(&d, &StateOptions::default()).expect("create"));
        for f in ["warren.db", "warren.db-wal", "warren.db-shm"] {
            let _ = fs::remove_file(d.join(f));
        }
        fs::write(d.join("warren.db"), "").expect("truncate");
        let err = ensure_state(&d, &StateOptions::default())
            .expect_err("empty db")
            .report();
        assert!(err.contains("warren.db"), "{err}");

        // A server pair missing as a whole is re-issued by the same CA.
        let d = dir.path().join("server");
        let s = ensure_state(&d, &StateOptions::default()).expect("create");
        let ca = s.ca_pem.clone();
        drop(s);
        fs::remove_file(d.join("pki/server.crt")).expect("rm");
        fs::remove_file(d.join("pki/server.key")).expect("rm");
        let s = ensure_state(&d, &StateOptions::default()).expect("reissue");
        assert_eq!(s.ca_pem, ca);
        s.pki
            .verify_issued(&s.server_cert_pem, "server")
            .expect("signed by the CA");
    }
}
