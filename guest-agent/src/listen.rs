//! Listening sockets: a unix socket (container runtime) or vsock (microVM).

use crate::conn::{self, Agent};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixListener;

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
            let listener = VsockListener::bind(*port)?;
            loop {
                match listener.accept().await {
                    Ok(stream) => {
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

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is moved into the AsyncFd, so the descriptor stays open and unchanged
    // for the AsyncFd's whole lifetime.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// A listening AF_VSOCK stream socket.
pub struct VsockListener {
    fd: AsyncFd<OwnedFd>,
}

impl VsockListener {
    /// Listen on `port` for any CID.
    pub fn bind(port: u32) -> io::Result<Self> {
        // SAFETY: socket() takes integer arguments and returns a new descriptor or -1.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_VSOCK,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        })?;
        // SAFETY: `raw` was just returned by socket() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        // SAFETY: the pointer and length describe `addr`, a valid sockaddr_vm.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        })?;
        // SAFETY: listen() takes integer arguments.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
        Ok(Self { fd: register(fd)? })
    }

    /// Accept one connection.
    pub async fn accept(&self) -> io::Result<VsockStream> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: null address pointers are allowed (peer address not wanted).
                cvt(unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    )
                })
            });
            match res {
                Ok(Ok(raw)) => {
                    // SAFETY: accept4 returned a new descriptor owned by nobody else.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    return VsockStream::new(fd);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// A connected AF_VSOCK stream socket.
pub struct VsockStream {
    fd: AsyncFd<OwnedFd>,
}

impl VsockStream {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self { fd: register(fd)? })
    }
}

impl AsyncRead for VsockStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let res = guard.try_io(|fd| {
                // SAFETY: `unfilled` is valid for writes of `unfilled.len()` bytes.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for VsockStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            let res = guard.try_io(|fd| {
                // SAFETY: `data` is valid for reads of `data.len()` bytes. MSG_NOSIGNAL: a closed
                // peer yields EPIPE instead of SIGPIPE.
                let n = unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        data.as_ptr().cast(),
                        data.len(),
                        libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: shutdown() takes integer arguments.
        let rc = unsafe { libc::shutdown(self.fd.get_ref().as_raw_fd(), libc::SHUT_WR) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOTCONN) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }
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
        match VsockListener::bind(17_999) {
            Ok(_) => {}
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
