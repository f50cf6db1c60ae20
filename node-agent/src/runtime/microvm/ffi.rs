//! libkrun, loaded at run time.
//!
//! The crates.io build of `libkrun-sys` only *declares* libkrun's functions: calling them would
//! leave undefined symbols at link time, and the agent must build and run on hosts without
//! libkrun. So libkrun is `dlopen`ed (libloading) when a VM is started, and each function is
//! resolved with a fn-pointer type from [`sig`], which mirrors libkrun-sys (checked by the
//! compiler by a `const _` next to [`sig`]).

use std::ffi::{c_char, c_void, CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libloading::Library;
use nix::errno::Errno;

use super::plan::KrunCall;

/// Names tried, in order, when no explicit libkrun path is configured.
pub const LIBKRUN_NAMES: &[&str] = &["libkrun.so.1", "libkrun.so"];
/// libkrunfw sonames: libkrun loads `.so.5` (current releases) or `.so.4` (older ones) itself.
pub const LIBKRUNFW_NAMES: &[&str] = &["libkrunfw.so.5", "libkrunfw.so.4"];

/// libkrun's C signatures, in one place. Each alias mirrors the declaration in `libkrun-sys`
/// 0.11 (`src/lib.rs`), itself generated from libkrun.h; `krun_add_vsock_port` and
/// `krun_get_max_vcpus` are missing from libkrun-sys and are copied from libkrun.h.
/// Every function returns 0 (or a non-negative value) on success and `-errno` on failure.
pub mod sig {
    use std::ffi::c_char;

    /// `int32_t krun_set_log_level(uint32_t level)`
    pub type SetLogLevel = unsafe extern "C" fn(level: u32) -> i32;
    /// `int32_t krun_create_ctx()`
    pub type CreateCtx = unsafe extern "C" fn() -> i32;
    /// `int32_t krun_free_ctx(uint32_t ctx_id)`
    pub type FreeCtx = unsafe extern "C" fn(ctx_id: u32) -> i32;
    /// `int32_t krun_set_vm_config(uint32_t ctx_id, uint8_t num_vcpus, uint32_t ram_mib)`
    pub type SetVmConfig = unsafe extern "C" fn(ctx_id: u32, num_vcpus: u8, ram_mib: u32) -> i32;
    /// `int32_t krun_set_root(uint32_t ctx_id, const char *root_path)`
    pub type SetRoot = unsafe extern "C" fn(ctx_id: u32, root_path: *const c_char) -> i32;
    /// `int32_t krun_add_virtiofs(uint32_t ctx_id, const char *c_tag, const char *c_path)`
    pub type AddVirtiofs =
        unsafe extern "C" fn(ctx_id: u32, tag: *const c_char, path: *const c_char) -> i32;
    /// `int32_t krun_add_virtiofs3(uint32_t ctx_id, const char *c_tag, const char *c_path,
    /// uint64_t shm_size, bool read_only)`
    pub type AddVirtiofs3 = unsafe extern "C" fn(
        ctx_id: u32,
        tag: *const c_char,
        path: *const c_char,
        shm_size: u64,
        read_only: bool,
    ) -> i32;
    /// `int32_t krun_set_kernel(uint32_t ctx_id, const char *kernel_path, uint32_t kernel_format,
    /// const char *initramfs, const char *cmdline)`; `initramfs`/`cmdline` may be NULL.
    pub type SetKernel = unsafe extern "C" fn(
        ctx_id: u32,
        kernel_path: *const c_char,
        kernel_format: u32,
        initramfs: *const c_char,
        cmdline: *const c_char,
    ) -> i32;
    /// `int32_t krun_set_exec(uint32_t ctx_id, const char *exec_path, const char *const argv[],
    /// const char *const envp[])`; arrays are NULL-terminated, `envp == NULL` copies the host env.
    pub type SetExec = unsafe extern "C" fn(
        ctx_id: u32,
        exec_path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> i32;
    /// `int32_t krun_set_workdir(uint32_t ctx_id, const char *workdir_path)`
    pub type SetWorkdir = unsafe extern "C" fn(ctx_id: u32, workdir_path: *const c_char) -> i32;
    /// `int32_t krun_set_rlimits(uint32_t ctx_id, const char *const rlimits[])`
    pub type SetRlimits = unsafe extern "C" fn(ctx_id: u32, rlimits: *const *const c_char) -> i32;
    /// `int32_t krun_add_vsock_port2(uint32_t ctx_id, uint32_t port, const char *c_filepath,
    /// bool listen)`
    pub type AddVsockPort2 =
        unsafe extern "C" fn(ctx_id: u32, port: u32, filepath: *const c_char, listen: bool) -> i32;
    /// `int32_t krun_add_vsock_port(uint32_t ctx_id, uint32_t port, const char *c_filepath)`
    /// (libkrun.h; not in libkrun-sys).
    pub type AddVsockPort =
        unsafe extern "C" fn(ctx_id: u32, port: u32, filepath: *const c_char) -> i32;
    /// `int32_t krun_disable_implicit_vsock(uint32_t ctx_id)`
    pub type DisableImplicitVsock = unsafe extern "C" fn(ctx_id: u32) -> i32;
    /// `int32_t krun_add_vsock(uint32_t ctx_id, uint32_t tsi_features)`
    pub type AddVsock = unsafe extern "C" fn(ctx_id: u32, tsi_features: u32) -> i32;
    /// `int32_t krun_set_console_output(uint32_t ctx_id, const char *c_filepath)`
    pub type SetConsoleOutput = unsafe extern "C" fn(ctx_id: u32, filepath: *const c_char) -> i32;
    /// `int32_t krun_start_enter(uint32_t ctx_id)`: returns only on failure.
    pub type StartEnter = unsafe extern "C" fn(ctx_id: u32) -> i32;
    /// `int32_t krun_get_max_vcpus(void)` (libkrun.h; not in libkrun-sys).
    pub type GetMaxVcpus = unsafe extern "C" fn() -> i32;
}

// Compile-time proof that `sig` matches libkrun-sys: each libkrun-sys item must coerce to our
// fn-pointer type. The pointers only exist during const evaluation (the constant's value is
// `()`), so no libkrun symbol is referenced at link time.
const _: () = {
    let _: sig::SetLogLevel = libkrun_sys::krun_set_log_level;
    let _: sig::CreateCtx = libkrun_sys::krun_create_ctx;
    let _: sig::FreeCtx = libkrun_sys::krun_free_ctx;
    let _: sig::SetVmConfig = libkrun_sys::krun_set_vm_config;
    let _: sig::SetRoot = libkrun_sys::krun_set_root;
    let _: sig::SetKernel = libkrun_sys::krun_set_kernel;
    let _: sig::AddVirtiofs = libkrun_sys::krun_add_virtiofs;
    let _: sig::AddVirtiofs3 = libkrun_sys::krun_add_virtiofs3;
    let _: sig::SetExec = libkrun_sys::krun_set_exec;
    let _: sig::SetWorkdir = libkrun_sys::krun_set_workdir;
    let _: sig::SetRlimits = libkrun_sys::krun_set_rlimits;
    let _: sig::AddVsockPort2 = libkrun_sys::krun_add_vsock_port2;
    let _: sig::DisableImplicitVsock = libkrun_sys::krun_disable_implicit_vsock;
    let _: sig::AddVsock = libkrun_sys::krun_add_vsock;
    let _: sig::SetConsoleOutput = libkrun_sys::krun_set_console_output;
    let _: sig::StartEnter = libkrun_sys::krun_start_enter;
};

/// A libkrun failure, naming the call.
#[derive(Debug, thiserror::Error)]
pub enum FfiError {
    #[error("cannot load libkrun: {tried}")]
    Load { tried: String },
    #[error("{library} has no {symbol}, needed to {purpose}; install a newer libkrun")]
    MissingSymbol {
        library: String,
        symbol: &'static str,
        purpose: &'static str,
    },
    #[error("{symbol}({detail}) failed: {errno}")]
    Call {
        symbol: &'static str,
        detail: String,
        errno: Errno,
    },
    #[error("{what} contains a NUL byte")]
    Nul { what: String },
    #[error("the VM needs {wanted} vCPUs but this hypervisor supports at most {max}")]
    TooManyVcpus { wanted: u8, max: i32 },
}

/// Resolved functions; `None` where this libkrun build lacks the symbol.
struct Api {
    create_ctx: sig::CreateCtx,
    start_enter: sig::StartEnter,
    free_ctx: Option<sig::FreeCtx>,
    set_log_level: Option<sig::SetLogLevel>,
    set_vm_config: Option<sig::SetVmConfig>,
    set_root: Option<sig::SetRoot>,
    set_kernel: Option<sig::SetKernel>,
    add_virtiofs: Option<sig::AddVirtiofs>,
    add_virtiofs3: Option<sig::AddVirtiofs3>,
    set_exec: Option<sig::SetExec>,
    set_workdir: Option<sig::SetWorkdir>,
    set_rlimits: Option<sig::SetRlimits>,
    add_vsock_port2: Option<sig::AddVsockPort2>,
    add_vsock_port: Option<sig::AddVsockPort>,
    disable_implicit_vsock: Option<sig::DisableImplicitVsock>,
    add_vsock: Option<sig::AddVsock>,
    set_console_output: Option<sig::SetConsoleOutput>,
    get_max_vcpus: Option<sig::GetMaxVcpus>,
}

/// An open libkrun. The function pointers in `api` stay valid as long as `_lib` is loaded,
/// which is as long as this value lives.
pub struct Libkrun {
    path: PathBuf,
    api: Api,
    _lib: Library,
}

/// Resolve `name` as a `T`.
///
/// # Safety
/// `T` must be the fn-pointer type matching the symbol's C declaration (see [`sig`]).
unsafe fn symbol<T: Copy>(lib: &Library, name: &str) -> Option<T> {
    // SAFETY: the caller guarantees T is the symbol's true type; the returned pointer is only
    // used while `lib` stays loaded (it is stored next to the Library in `Libkrun`).
    unsafe { lib.get::<T>(name.as_bytes()).ok().map(|s| *s) }
}

impl Libkrun {
    /// Load libkrun from `path`, or search [`LIBKRUN_NAMES`] in the loader's default paths.
    pub fn open(path: Option<&Path>) -> Result<Libkrun, FfiError> {
        let candidates: Vec<&OsStr> = match path {
            Some(p) => vec![p.as_os_str()],
            None => LIBKRUN_NAMES.iter().map(OsStr::new).collect(),
        };
        let mut tried = Vec::new();
        for name in candidates {
            // SAFETY: loading libkrun runs its (Rust) static initialisers, which have no
            // preconditions; we trust the library installed on the host as much as the agent.
            match unsafe { Library::new(name) } {
                Ok(lib) => return Libkrun::from_library(lib, Path::new(name)),
                // dlerror's text already names the file.
                Err(e) => tried.push(e.to_string()),
            }
        }
        Err(FfiError::Load {
            tried: tried.join("; "),
        })
    }

    fn from_library(lib: Library, opened_as: &Path) -> Result<Libkrun, FfiError> {
        let library = opened_as.display().to_string();
        let missing = |symbol: &'static str| FfiError::MissingSymbol {
            library: library.clone(),
            symbol,
            purpose: "create and start a VM (is this libkrun?)",
        };
        // SAFETY: every `symbol` call below resolves a name with the `sig` alias of that name.
        let api = unsafe {
            Api {
                create_ctx: symbol(&lib, "krun_create_ctx")
                    .ok_or_else(|| missing("krun_create_ctx"))?,
                start_enter: symbol(&lib, "krun_start_enter")
                    .ok_or_else(|| missing("krun_start_enter"))?,
                free_ctx: symbol(&lib, "krun_free_ctx"),
                set_log_level: symbol(&lib, "krun_set_log_level"),
                set_vm_config: symbol(&lib, "krun_set_vm_config"),
                set_root: symbol(&lib, "krun_set_root"),
                set_kernel: symbol(&lib, "krun_set_kernel"),
                add_virtiofs: symbol(&lib, "krun_add_virtiofs"),
                add_virtiofs3: symbol(&lib, "krun_add_virtiofs3"),
                set_exec: symbol(&lib, "krun_set_exec"),
                set_workdir: symbol(&lib, "krun_set_workdir"),
                set_rlimits: symbol(&lib, "krun_set_rlimits"),
                add_vsock_port2: symbol(&lib, "krun_add_vsock_port2"),
                add_vsock_port: symbol(&lib, "krun_add_vsock_port"),
                disable_implicit_vsock: symbol(&lib, "krun_disable_implicit_vsock"),
                add_vsock: symbol(&lib, "krun_add_vsock"),
                set_console_output: symbol(&lib, "krun_set_console_output"),
                get_max_vcpus: symbol(&lib, "krun_get_max_vcpus"),
            }
        };
        let path =
            loaded_path(api.create_ctx as *const c_void).unwrap_or_else(|| opened_as.to_path_buf());
        Ok(Libkrun {
            path,
            api,
            _lib: lib,
        })
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Symbols the microVM runtime uses, and whether this build has each.
    pub fn symbols(&self) -> Vec<(&'static str, bool)> {
        let a = &self.api;
        vec![
            ("krun_set_vm_config", a.set_vm_config.is_some()),
            ("krun_set_root", a.set_root.is_some()),
            ("krun_set_kernel", a.set_kernel.is_some()),
            ("krun_add_virtiofs3", a.add_virtiofs3.is_some()),
            ("krun_add_virtiofs", a.add_virtiofs.is_some()),
            (
                "krun_disable_implicit_vsock",
                a.disable_implicit_vsock.is_some(),
            ),
            ("krun_add_vsock", a.add_vsock.is_some()),
            ("krun_add_vsock_port2", a.add_vsock_port2.is_some()),
            ("krun_add_vsock_port", a.add_vsock_port.is_some()),
            ("krun_set_console_output", a.set_console_output.is_some()),
            ("krun_set_rlimits", a.set_rlimits.is_some()),
            ("krun_set_workdir", a.set_workdir.is_some()),
            ("krun_set_exec", a.set_exec.is_some()),
            ("krun_set_log_level", a.set_log_level.is_some()),
            ("krun_get_max_vcpus", a.get_max_vcpus.is_some()),
        ]
    }

    fn need<T>(
        &self,
        f: Option<T>,
        symbol: &'static str,
        purpose: &'static str,
    ) -> Result<T, FfiError> {
        f.ok_or_else(|| FfiError::MissingSymbol {
            library: self.path.display().to_string(),
            symbol,
            purpose,
        })
    }

    /// `krun_set_log_level`, when this libkrun has it (it is process-wide).
    pub fn set_log_level(&self, level: u32) -> Result<(), FfiError> {
        let Some(f) = self.api.set_log_level else {
            return Ok(());
        };
        // SAFETY: plain integer argument; the pointer is valid while `self` lives.
        check(unsafe { f(level) }, "krun_set_log_level", level.to_string())
    }

    /// `krun_get_max_vcpus`, when this libkrun has it.
    pub fn max_vcpus(&self) -> Result<Option<i32>, FfiError> {
        let Some(f) = self.api.get_max_vcpus else {
            return Ok(None);
        };
        // SAFETY: no arguments; the pointer is valid while `self` lives.
        let n = unsafe { f() };
        check(n, "krun_get_max_vcpus", String::new())?;
        Ok(Some(n))
    }

    /// `krun_create_ctx`: a fresh configuration context.
    pub fn create_ctx(&self) -> Result<u32, FfiError> {
        // SAFETY: no arguments; the pointer is valid while `self` lives.
        let ctx = unsafe { (self.api.create_ctx)() };
        check(ctx, "krun_create_ctx", String::new())?;
        Ok(ctx.unsigned_abs())
    }

    /// `krun_free_ctx`, for contexts that will not be started.
    pub fn free_ctx(&self, ctx: u32) {
        if let Some(f) = self.api.free_ctx {
            // SAFETY: integer argument; libkrun answers -ENOENT for unknown ids.
            unsafe { f(ctx) };
        }
    }

    /// Make one configuration call; a negative return becomes [`FfiError::Call`].
    pub fn apply(&self, ctx: u32, call: &KrunCall) -> Result<(), FfiError> {
        let a = &self.api;
        let sym = call.symbol();
        match call {
            KrunCall::SetVmConfig { vcpus, memory_mib } => {
                let f = self.need(a.set_vm_config, sym, "size the VM")?;
                // SAFETY: integer arguments only.
                let ret = unsafe { f(ctx, *vcpus, *memory_mib) };
                check(ret, sym, format!("vcpus={vcpus}, ram_mib={memory_mib}"))
            }
            KrunCall::SetRoot { path } => {
                let f = self.need(a.set_root, sym, "share the sandbox root")?;
                let c = c_path(path)?;
                // SAFETY: `c` is a valid NUL-terminated string that outlives the call (libkrun copies it).
                check(
                    unsafe { f(ctx, c.as_ptr()) },
                    sym,
                    path.display().to_string(),
                )
            }
            KrunCall::AddVirtiofs {
                tag,
                path,
                read_only,
            } => {
                let c_tag = c_string(tag, "virtio-fs tag")?;
                let c_dir = c_path(path)?;
                let detail = format!("{tag}, {}, read_only={read_only}", path.display());
                if let Some(f) = a.add_virtiofs3 {
                    // SAFETY: both strings are NUL-terminated and outlive the call (libkrun copies
                    // them); shm_size 0 means no DAX window.
                    return check(
                        unsafe { f(ctx, c_tag.as_ptr(), c_dir.as_ptr(), 0, *read_only) },
                        sym,
                        detail,
                    );
                }
                // Older libkrun shares writable only: fine for writable volumes, never for a
                // read-only one (the guest could write through it).
                match (read_only, a.add_virtiofs) {
                    (false, Some(f)) => check(
                        // SAFETY: as above.
                        unsafe { f(ctx, c_tag.as_ptr(), c_dir.as_ptr()) },
                        "krun_add_virtiofs",
                        detail,
                    ),
                    _ => Err(FfiError::MissingSymbol {
                        library: self.path.display().to_string(),
                        symbol: "krun_add_virtiofs3",
                        purpose: "share a volume read-only with the guest",
                    }),
                }
            }
            KrunCall::SetKernel {
                path,
                format,
                initramfs,
                cmdline,
            } => {
                let f = self.need(a.set_kernel, sym, "boot a custom kernel")?;
                let kernel = c_path(path)?;
                let initramfs = initramfs.as_deref().map(c_path).transpose()?;
                let cmdline = cmdline
                    .as_deref()
                    .map(|s| c_string(s, "kernel cmdline"))
                    .transpose()?;
                let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
                // SAFETY: all strings are NUL-terminated and outlive the call; NULL is allowed for
                // initramfs and cmdline (libkrun.h).
                let ret = unsafe {
                    f(
                        ctx,
                        kernel.as_ptr(),
                        format.krun_value(),
                        ptr(&initramfs),
                        ptr(&cmdline),
                    )
                };
                check(ret, sym, format!("{}, format={format:?}", path.display()))
            }
            KrunCall::DisableImplicitVsock => {
                let f = self.need(
                    a.disable_implicit_vsock,
                    sym,
                    "keep the guest off the host network (TSI)",
                )?;
                // SAFETY: integer argument only.
                check(unsafe { f(ctx) }, sym, String::new())
            }
            KrunCall::AddVsock { tsi_features } => {
                let f = self.need(a.add_vsock, sym, "add a vsock device without TSI")?;
                // SAFETY: integer arguments only.
                check(
                    unsafe { f(ctx, *tsi_features) },
                    sym,
                    format!("tsi_features={tsi_features}"),
                )
            }
            KrunCall::AddVsockPort {
                port,
                host_socket,
                listen,
            } => {
                let c = c_path(host_socket)?;
                let detail = format!("port={port}, {}, listen={listen}", host_socket.display());
                if let Some(f) = a.add_vsock_port2 {
                    // SAFETY: `c` is NUL-terminated and outlives the call; the rest are integers.
                    return check(unsafe { f(ctx, *port, c.as_ptr(), *listen) }, sym, detail);
                }
                // Fallback: the original krun_add_vsock_port only lets the *guest* connect out to
                // a unix socket the host listens on (listen = false). Our guest agent listens and
                // the host connects, which needs krun_add_vsock_port2, so for listen = true there
                // is no fallback: the VM would boot with an unreachable agent.
                match (listen, a.add_vsock_port) {
                    (false, Some(f)) => {
                        // SAFETY: as above.
                        check(
                            unsafe { f(ctx, *port, c.as_ptr()) },
                            "krun_add_vsock_port",
                            detail,
                        )
                    }
                    _ => Err(FfiError::MissingSymbol {
                        library: self.path.display().to_string(),
                        symbol: "krun_add_vsock_port2",
                        purpose: "let the host connect to the guest agent's vsock port",
                    }),
                }
            }
            KrunCall::SetConsoleOutput { path } => {
                let f = self.need(a.set_console_output, sym, "capture the guest console")?;
                let c = c_path(path)?;
                // SAFETY: `c` is NUL-terminated and outlives the call.
                check(
                    unsafe { f(ctx, c.as_ptr()) },
                    sym,
                    path.display().to_string(),
                )
            }
            KrunCall::SetRlimits { rlimits } => {
                let f = self.need(a.set_rlimits, sym, "set guest rlimits")?;
                let arr = CStringArray::new(rlimits, "rlimit")?;
                // SAFETY: `arr` is a NULL-terminated array of valid strings outliving the call.
                check(unsafe { f(ctx, arr.as_ptr()) }, sym, rlimits.join(" "))
            }
            KrunCall::SetWorkdir { path } => {
                let f = self.need(a.set_workdir, sym, "set the guest working directory")?;
                let c = c_string(path, "workdir")?;
                // SAFETY: `c` is NUL-terminated and outlives the call.
                check(unsafe { f(ctx, c.as_ptr()) }, sym, path.clone())
            }
            KrunCall::SetExec { path, argv, env } => {
                let f = self.need(a.set_exec, sym, "start the guest agent")?;
                let exec = c_string(path, "exec path")?;
                let argv_c = CStringArray::new(argv, "argument")?;
                // Always a (possibly empty) array: NULL would make libkrun copy the host's env.
                let env_c = CStringArray::new(env, "environment entry")?;
                // SAFETY: all pointers are NUL-terminated strings / NULL-terminated arrays that
                // outlive the call.
                let ret = unsafe { f(ctx, exec.as_ptr(), argv_c.as_ptr(), env_c.as_ptr()) };
                check(
                    ret,
                    sym,
                    format!("{path}, {} args, {} env", argv.len(), env.len()),
                )
            }
        }
    }

    /// `krun_start_enter`: boots the VM and never returns on success (libkrun exits the process
    /// with the guest's exit code when the VM stops). Returns the error otherwise.
    pub fn start_enter(&self, ctx: u32) -> FfiError {
        // SAFETY: `ctx` came from krun_create_ctx and was fully configured; the library stays
        // loaded because `self` is borrowed for the whole call (which on success never ends).
        let ret = unsafe { (self.api.start_enter)(ctx) };
        match check(ret, "krun_start_enter", format!("ctx={ctx}")) {
            Err(e) => e,
            Ok(()) => FfiError::Call {
                symbol: "krun_start_enter",
                detail: format!("ctx={ctx}, returned {ret}"),
                errno: Errno::UnknownErrno,
            },
        }
    }
}

/// A negative libkrun return value as an error naming the call.
fn check(ret: i32, symbol: &'static str, detail: String) -> Result<(), FfiError> {
    if ret < 0 {
        Err(FfiError::Call {
            symbol,
            detail,
            errno: Errno::from_raw(ret.saturating_neg()),
        })
    } else {
        Ok(())
    }
}

fn c_string(s: &str, what: &str) -> Result<CString, FfiError> {
    CString::new(s).map_err(|_| FfiError::Nul {
        what: format!("{what} {s:?}"),
    })
}

fn c_path(p: &Path) -> Result<CString, FfiError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| FfiError::Nul {
        what: format!("path {p:?}"),
    })
}

/// A NULL-terminated `const char *const[]` built from Rust strings.
struct CStringArray {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStringArray {
    fn new(items: &[String], what: &str) -> Result<CStringArray, FfiError> {
        let strings = items
            .iter()
            .map(|s| c_string(s, what))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(CStringArray {
            _strings: strings,
            ptrs,
        })
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

/// The file a loaded symbol comes from (the loader's resolved path), via `dladdr`.
pub(crate) fn loaded_path(addr: *const c_void) -> Option<PathBuf> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only inspects `addr` and writes into `info`, which is valid for writes.
    if unsafe { libc::dladdr(addr, info.as_mut_ptr()) } == 0 {
        return None;
    }
    // SAFETY: dladdr returned non-zero, so it filled `info` (and it was zeroed before anyway).
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader, valid while the object
    // stays loaded; we copy it out immediately.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(PathBuf::from(OsStr::from_bytes(name.to_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_returns_name_the_errno_and_call() {
        let err = check(-libc::EINVAL, "krun_set_root", "/x".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "krun_set_root(/x) failed: EINVAL: Invalid argument"
        );
        assert!(check(0, "krun_set_root", String::new()).is_ok());
        assert!(check(3, "krun_create_ctx", String::new()).is_ok());
    }

    #[test]
    fn c_arrays_are_null_terminated() {
        let arr = CStringArray::new(&["A=1".into(), "B=2".into()], "env").unwrap();
        assert_eq!(arr.ptrs.len(), 3);
        assert!(arr.ptrs[2].is_null());
        // SAFETY: ptrs[0] points into arr._strings[0], alive while `arr` is.
        let first = unsafe { CStr::from_ptr(arr.ptrs[0]) };
        assert_eq!(first.to_str(), Ok("A=1"));
        assert!(matches!(
            CStringArray::new(&["a\0b".into()], "env"),
            Err(FfiError::Nul { .. })
        ));
    }

    #[test]
    fn missing_library_lists_what_was_tried() {
        let err = Libkrun::open(Some(Path::new("/nonexistent/libkrun.so.1")))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("/nonexistent/libkrun.so.1"),
            "{err}"
        );
    }

    #[test]
    fn a_library_without_libkrun_symbols_is_refused() {
        // libc is always loadable and has none of libkrun's symbols.
        let err = Libkrun::open(Some(Path::new("libc.so.6"))).err().unwrap();
        assert!(
            matches!(
                err,
                FfiError::MissingSymbol {
                    symbol: "krun_create_ctx",
                    ..
                }
            ),
            "{err}"
        );
    }
}
