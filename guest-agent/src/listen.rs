//! Listening sockets: a unix socket (container runtime) or vsock (microVM).

use crate::conn::{self, Agent};
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Vsock(u32),
    /// A listening unix socket inherited from the parent (the host binds it; `fd:3`).
    Fd(i32),
}

impl ListenAddr {
    /// Parse `unix:/path` or `vsock:PORT`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            Ok(Self::Unix(PathBuf::from(path)))
        } else if let Some(fd) = s.strip_prefix("fd:") {
            match fd.parse::<i32>() {
                Ok(n) if n >= 3 => Ok(Self::Fd(n)),
                _ => Err(format!("invalid inherited fd: {fd} (3 or more)")),
            }
        } else if let Some(port) = s.strip_prefix("vsock:") {
            port.parse()
                .map(Self::Vsock)
                .map_err(|_| format!("invalid vsock port: {port}"))
        } else {
            Err(format!(
                "invalid listen address {s:?} (expected unix:/path, fd:N or vsock:PORT)"
            ))
        }
    }
}

/// Bind `addr` and serve connections forever (each in its own task).
pub async fn serve(addr: &ListenAddr, agent: Arc<Agent>) -> io::Result<()> {
    match addr {
        ListenAddr::Unix(_) | ListenAddr::Fd(_) => {
            let listener = match addr {
                ListenAddr::Fd(fd) => inherited_unix(*fd)?,
                ListenAddr::Unix(path) => bind_unix(path)?,
                ListenAddr::Vsock(_) => unreachable!("matched above"),
            };
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(conn::serve(stream, agent.clone()));
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        }
        ListenAddr::Vsock(port) => {
            let listener = bind_vsock(*port)?;
            loop {
                match listener.accept().await {
                    Ok((stream, _peer)) => {
                        tokio::spawn(conn::serve(stream, agent.clone()));
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        }
    }
}

/// Transient accept failures (EMFILE, ECONNABORTED...) must not stop the agent.
async fn accept_failed(e: io::Error) {
    warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The listening unix socket the host handed over as `fd`.
fn inherited_unix(fd: i32) -> io::Result<UnixListener> {
    use std::os::fd::FromRawFd;
    // Refuse anything but a socket: a wrong fd number must fail loudly, not be misused.
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited fd {fd} is not a socket"),
        ));
    }
    // SAFETY: the fd was handed to this process for this purpose (crun --preserve-fds) and is
    // owned by nothing else here; it is checked to be a socket above.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

/// Bind a unix socket at `path`, replacing a stale socket file, with mode 0600.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() || m.is_file() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Listen on vsock `port` for any CID (tokio-vsock: the socket calls and their readiness).
fn bind_vsock(port: u32) -> io::Result<VsockListener> {
    VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            ListenAddr::parse("unix:/a/b.sock"),
            Ok(ListenAddr::Unix("/a/b.sock".into()))
        );
        assert_eq!(ListenAddr::parse("vsock:7000"), Ok(ListenAddr::Vsock(7000)));
        assert!(ListenAddr::parse("vsock:x").is_err());
        assert!(ListenAddr::parse("unix:").is_err());
        assert!(ListenAddr::parse("tcp:1").is_err());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.sock");
        let first = bind_unix(&path).unwrap();
        drop(first);
        let _second = bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
    }

    #[tokio::test]
    async fn vsock_binds_when_supported() {
        match bind_vsock(17_999) {
            Ok(listener) => {
                // Where the kernel has vsock loopback (CID 1), a real connection goes through.
                let local = VsockAddr::new(tokio_vsock::VMADDR_CID_LOCAL, 17_999);
                match tokio_vsock::VsockStream::connect(local).await {
                    Ok(mut client) => {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let (mut server, _) = listener.accept().await.unwrap();
                        client.write_all(b"ping").await.unwrap();
                        let mut got = [0u8; 4];
                        server.read_exact(&mut got).await.unwrap();
                        assert_eq!(&got, b"ping");
                    }
                    Err(e) => eprintln!("no vsock loopback here ({e}); bind checked only"),
                }
            }
            // No vsock transport in this kernel/VM: nothing to test.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT) | Some(libc::ENODEV)
                ) => {}
            Err(e) => panic!("vsock bind failed: {e}"),
        }
    }
}
