//! Frames of the host <-> guest protocol. Plain enums and structs only: postcard encodes by position,
//! so fields are only ever appended in a new protocol version, never reordered.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Frames sent by the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostFrame {
    /// First frame of every connection.
    Hello(Hello),
    /// Second frame: what this connection is for.
    Request(Request),
    /// Bytes for the running process's stdin (exec) or the file being written (fs write).
    Stdin(Bytes),
    /// Close the process's stdin / end of the file being written.
    StdinClose,
    /// Deliver a signal (number) to the process group.
    Signal(i32),
    /// Resize the pseudo-terminal.
    Resize { rows: u16, cols: u16 },
}

/// Frames sent by the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GuestFrame {
    /// Answer to [`Hello`].
    HelloAck(HelloAck),
    /// The process has been spawned.
    Started { pid: u32 },
    /// Output of the process (or, for a pty, the terminal's output).
    Stdout(Bytes),
    /// Standard error of the process.
    Stderr(Bytes),
    /// The process ended. `code` is the exit code, `signal` the terminating signal if any.
    Exited(ExitStatus),
    /// A chunk of a file being read.
    Data(Bytes),
    /// End of a file being read.
    DataEnd,
    /// A request succeeded with this result.
    Done(Response),
    /// A request failed.
    Error(GuestError),
}

/// Opening frame of a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
}

/// Guest's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloAck {
    pub version: u32,
    pub agent_version: String,
}

/// What a connection asks of the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness probe: answered by `Done(Response::Pong)`.
    Ping,
    /// Run a process. Guest answers `Started`, then `Stdout`/`Stderr` chunks, then `Exited`;
    /// host may send `Stdin`, `StdinClose`, `Signal`, `Resize` at any time before `Exited`.
    Exec(ExecRequest),
    /// Stream a file: guest answers `Data` chunks then `DataEnd` (or `Error`).
    ReadFile { path: String },
    /// Write a file: host sends `Stdin` chunks then `StdinClose`; guest answers `Done(Written)`.
    WriteFile {
        path: String,
        mode: u32,
        append: bool,
    },
    /// List a directory: `Done(Entries)`.
    List { path: String },
    /// Stat a path (no symlink following): `Done(Stat)`.
    Stat { path: String },
    /// Create a directory: `Done(Ok)`.
    Mkdir { path: String, parents: bool },
    /// Remove a file or directory: `Done(Ok)`.
    Remove { path: String, recursive: bool },
    /// Rename within the guest: `Done(Ok)`.
    Rename { from: String, to: String },
    /// Copy within the guest (recursive for directories): `Done(Ok)`.
    Copy { from: String, to: String },
    /// Resource usage: `Done(Metrics)`.
    Metrics,
    /// Set the guest's hostname (a warm-pool member claimed under a new name; the guest is
    /// its own UTS namespace, as in a microVM): `Done(Ok)`.
    SetHostname { name: String },
}

/// A process to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub command: String,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    /// Added to (and overriding) the sandbox's environment.
    pub env: Vec<(String, String)>,
    /// User name or numeric uid[:gid].
    pub user: Option<String>,
    /// Kill the whole process group after this many milliseconds.
    pub timeout_ms: Option<u64>,
    pub rlimits: Vec<Rlimit>,
    /// Keep stdin open for `Stdin` frames; otherwise stdin is /dev/null.
    pub stdin: bool,
    /// Run on a pseudo-terminal of this size.
    pub tty: Option<TtySize>,
}

/// Terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// A resource limit applied to the process before exec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: RlimitResource,
    pub soft: u64,
    pub hard: u64,
}

/// The resources an [`Rlimit`] can limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RlimitResource {
    Cpu,
    Fsize,
    Data,
    Stack,
    Core,
    Nofile,
    As,
    Nproc,
}

impl RlimitResource {
    /// Parse the usual names (`nofile`, `RLIMIT_NOFILE`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        let s = s.strip_prefix("rlimit_").unwrap_or(&s);
        Some(match s {
            "cpu" => Self::Cpu,
            "fsize" => Self::Fsize,
            "data" => Self::Data,
            "stack" => Self::Stack,
            "core" => Self::Core,
            "nofile" => Self::Nofile,
            "as" => Self::As,
            "nproc" => Self::Nproc,
            _ => return None,
        })
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; `128 + signal` when killed by a signal, as shells report it.
    pub code: i32,
    pub signal: Option<i32>,
    /// True if the guest killed the process group because its timeout elapsed.
    pub timed_out: bool,
}

/// Successful results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Pong,
    Ok,
    Written { bytes: u64 },
    Entries(Vec<DirEntry>),
    Stat(FileStat),
    Metrics(GuestMetrics),
}

/// Kind of a filesystem object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub stat: FileStat,
}

/// Metadata of a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileStat {
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub mtime_secs: i64,
    pub uid: u32,
    pub gid: u32,
}

/// Resource usage seen from inside the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestMetrics {
    /// CPU time consumed by the sandbox's processes since boot, in microseconds.
    pub cpu_usage_us: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub processes: u32,
}

/// Typed failures reported by the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestErrorKind {
    NotFound,
    AlreadyExists,
    PermissionDenied,
    NotADirectory,
    IsADirectory,
    NoSpace,
    InvalidRequest,
    SpawnFailed,
    Unsupported,
    Other,
    /// The program of an exec does not exist (postcard numbers variants: new ones go last, so
    /// guests of older agents still decode).
    CommandNotFound,
}

/// An error reported by the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestError {
    pub kind: GuestErrorKind,
    pub message: String,
}

impl std::fmt::Display for GuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for GuestError {}

impl GuestError {
    pub fn new(kind: GuestErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Map an I/O error on `path` to a typed guest error.
    pub fn from_io(err: &std::io::Error, path: &str) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => GuestErrorKind::NotFound,
            K::AlreadyExists => GuestErrorKind::AlreadyExists,
            K::PermissionDenied => GuestErrorKind::PermissionDenied,
            K::NotADirectory => GuestErrorKind::NotADirectory,
            K::IsADirectory => GuestErrorKind::IsADirectory,
            K::StorageFull => GuestErrorKind::NoSpace,
            _ => GuestErrorKind::Other,
        };
        Self::new(kind, format!("{path}: {err}"))
    }
}
