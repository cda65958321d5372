//! Sockets of OpenVPN's management interface (`management IP PORT` or `management PATH
//! unix`): a non-blocking listener and non-blocking connections, with the peer's
//! credentials on a unix socket (`management-client-user`/`-group`, SO_PEERCRED).
//!
//! As in OpenVPN (manage.c `man_listen`, socket.c `socket_bind_unix`), a unix socket is
//! created with mode 0777 (its directory decides who can reach it), a stale socket file
//! of an earlier run is replaced, and the file is removed when the listener is dropped.
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};
use thiserror::Error;

/// Pending management connections the kernel queues: OpenVPN serves one at a time and
/// leaves the next in the backlog until the first one leaves.
const LISTEN_BACKLOG: i32 = 8;

#[derive(Debug, Error)]
pub enum MgmtBindError {
    #[error("management: creating the socket: {0}")]
    Create(#[source] io::Error),
    #[error(
        "management: binding tcp {addr}: address already in use (is another openvpn or warren running?)"
    )]
    InUse { addr: SocketAddr, source: io::Error },
    #[error("management: binding tcp {addr}: {source}")]
    BindTcp { addr: SocketAddr, source: io::Error },
    #[error("management: {path} exists and is not a socket; remove it or choose another path")]
    NotASocket { path: PathBuf },
    #[error("management: binding unix socket {path}: {source}")]
    BindUnix { path: PathBuf, source: io::Error },
    #[error("management: setting up the listener: {0}")]
    Setup(#[source] io::Error),
}

/// The peer of a unix-socket connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// A listening, non-blocking management socket.
#[derive(Debug)]
pub struct MgmtListener {
    sock: Socket,
    /// The socket file and its (device, inode), removed on drop if it is still ours.
    unix: Option<(PathBuf, (u64, u64))>,
    local: String,
}

impl MgmtListener {
    /// `management IP PORT`.
    pub fn bind_tcp(addr: SocketAddr) -> Result<MgmtListener, MgmtBindError> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)
            .map_err(MgmtBindError::Create)?;
        // OpenVPN manage.c man_listen: SO_REUSEADDR (a restart while a connection lingers).
        sock.set_reuse_address(true).map_err(MgmtBindError::Setup)?;
        sock.bind(&addr.into()).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                MgmtBindError::InUse { addr, source }
            } else {
                MgmtBindError::BindTcp { addr, source }
            }
        })?;
        sock.listen(LISTEN_BACKLOG).map_err(MgmtBindError::Setup)?;
        sock.set_nonblocking(true).map_err(MgmtBindError::Setup)?;
        sock.set_cloexec(true).map_err(MgmtBindError::Setup)?;
        let local = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or_else(|| addr.to_string(), |a| a.to_string());
        Ok(MgmtListener {
            sock,
            unix: None,
            local,
        })
    }

    /// `management PATH unix`: replaces a stale socket file, mode 0777 as OpenVPN.
    pub fn bind_unix(path: &Path) -> Result<MgmtListener, MgmtBindError> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                // OpenVPN man_delete_unix_socket: an old socket of an earlier run.
                std::fs::remove_file(path).map_err(|source| MgmtBindError::BindUnix {
                    path: path.to_owned(),
                    source,
                })?;
            }
            Ok(_) => {
                return Err(MgmtBindError::NotASocket {
                    path: path.to_owned(),
                });
            }
            Err(_) => {}
        }
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(MgmtBindError::Create)?;
        let bind_err = |source| MgmtBindError::BindUnix {
            path: path.to_owned(),
            source,
        };
        let addr = SockAddr::unix(path).map_err(bind_err)?;
        sock.bind(&addr).map_err(bind_err)?;
        let m = std::fs::metadata(path).map_err(bind_err)?;
        let id = (m.dev(), m.ino());
        // socket.c socket_bind_unix binds under umask(0).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(bind_err)?;
        let l = MgmtListener {
            sock,
            unix: Some((path.to_owned(), id)),
            local: path.display().to_string(),
        };
        l.sock
            .listen(LISTEN_BACKLOG)
            .map_err(MgmtBindError::Setup)?;
        l.sock.set_nonblocking(true).map_err(MgmtBindError::Setup)?;
        l.sock.set_cloexec(true).map_err(MgmtBindError::Setup)?;
        Ok(l)
    }

    /// `127.0.0.1:7505` or the socket path, for log lines.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The TCP address bound (`None` for a unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        if self.unix.is_some() {
            return None;
        }
        self.sock.local_addr().ok().and_then(|a| a.as_socket())
    }

    /// Accepts one pending connection, non-blocking (`Ok(None)`: nothing pending).
    pub fn accept(&self) -> io::Result<Option<MgmtConn>> {
        match self.sock.accept() {
            Ok((sock, peer)) => {
                sock.set_nonblocking(true)?;
                sock.set_cloexec(true)?;
                let unix = self.unix.is_some();
                let cred = if unix { peer_cred(&sock).ok() } else { None };
                let peer = match peer.as_socket() {
                    Some(a) => a.to_string(),
                    None => self.local.clone(),
                };
                if !unix {
                    // One reply line per write: no point in waiting for more.
                    let _ = sock.set_tcp_nodelay(true);
                }
                Ok(Some(MgmtConn { sock, peer, cred }))
            }
            Err(e) if crate::is_would_block(&e) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            // The peer gave up before we accepted: nothing to do.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for MgmtListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for MgmtListener {
    fn drop(&mut self) {
        if let Some((path, id)) = &self.unix
            && std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *id)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// SO_PEERCRED of a connected unix socket.
fn peer_cred(sock: &Socket) -> io::Result<PeerCred> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` its size; the descriptor is open.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// One management connection, non-blocking.
#[derive(Debug)]
pub struct MgmtConn {
    sock: Socket,
    peer: String,
    cred: Option<PeerCred>,
}

impl MgmtConn {
    /// The peer's address, or the socket path for a unix socket.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The peer's credentials (unix sockets only).
    pub fn peer_cred(&self) -> Option<PeerCred> {
        self.cred
    }

    /// Reads what is there: `Ok(0)` is EOF; `WouldBlock` means nothing yet.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.sock).read(buf)
    }

    /// Writes what fits without blocking.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.sock).write(buf)
    }
}

impl AsFd for MgmtConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn unix_socket_lifecycle() {
        let dir = std::env::temp_dir().join(format!("warren-mgmt-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("m.sock");
        let l = MgmtListener::bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777);
        assert!(l.accept().unwrap().is_none(), "nothing pending");
        let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let mut conn = l.accept().unwrap().expect("a connection");
        let cred = conn.peer_cred().expect("SO_PEERCRED");
        assert_eq!(cred.pid as u32, std::process::id());
        c.write_all(b"hi\n").unwrap();
        let mut buf = [0u8; 8];
        let n = conn.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\n");
        assert_eq!(conn.write(b"ok\r\n").unwrap(), 4);
        drop(l);
        assert!(!path.exists(), "the socket file goes with the listener");
        // A stale socket is replaced; a regular file is not.
        let l = MgmtListener::bind_unix(&path).unwrap();
        std::mem::forget(l);
        assert!(MgmtListener::bind_unix(&path).is_ok());
        std::fs::write(dir.join("f"), b"x").unwrap();
        assert!(matches!(
            MgmtListener::bind_unix(&dir.join("f")),
            Err(MgmtBindError::NotASocket { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn tcp_listener_accepts() {
        let l = MgmtListener::bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        let mut conn = None;
        for _ in 0..100 {
            conn = l.accept().unwrap();
            if conn.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let conn = conn.expect("a connection within a second");
        assert!(conn.peer().starts_with("127.0.0.1:"));
        assert!(conn.peer_cred().is_none());
    }
}
