//! Rust futures as Python awaitables, safe at interpreter exit.
//!
//! `pyo3_async_runtimes::tokio::future_into_py` completes the asyncio future from a tokio
//! blocking thread that attaches to Python after the Rust future ends, on a runtime that is
//! never shut down. When the program leaves (the last `await` resolved, `asyncio.run` returned,
//! `Py_FinalizeEx` started) such a thread can be force-unwound inside Python, and the runtime's
//! workers keep running pooled connections while the C library's exit handlers (OpenSSL's) free
//! what they use: the process dies with SIGSEGV or SIGABRT (PyO3/pyo3-async-runtimes#40; seen here
//! as exit 139 and "malloc_consolidate(): unaligned fastbin chunk detected" after cluster-mode
//! calls). This module owns the runtime instead and does the same job with two differences: every
//! completion is counted until it has left Python, and an `atexit` hook (registered by the
//! module's init) waits, GIL released and bounded, until none is in flight and then shuts the
//! runtime down, so no thread of ours runs while the interpreter and libc tear down. Cancellation
//! of the asyncio future aborts the Rust task, as before.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

/// Completions not yet finished (the Rust future may still run, or its result is being handed
/// to Python).
static IN_FLIGHT: Mutex<usize> = Mutex::new(0);
static SETTLED: Condvar = Condvar::new();
/// The longest the exit hook waits for work still in flight.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// The longest the exit hook waits for the runtime's threads to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The runtime every native call runs on; taken and shut down at exit.
static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);
/// Set by the exit hook: later calls fail at once instead of never resolving.
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);

/// A handle on [`RUNTIME`], built on first use. After the exit hook shut it down, spawned work is
/// dropped at once (tokio cancels tasks spawned on a runtime that is gone).
fn runtime() -> &'static Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("microsandbox-sdk")
            .build()
            .expect("cannot start the SDK's tokio runtime");
        let handle = rt.handle().clone();
        *RUNTIME.lock().unwrap_or_else(|p| p.into_inner()) = Some(rt);
        handle
    })
}

/// One counted completion; uncounted when dropped (finished, or aborted by cancellation).
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        *IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            SETTLED.notify_all();
        }
    }
}

/// Wait (GIL released) until no completion is in flight, at most [`EXIT_GRACE`], then shut the
/// runtime down (at most [`SHUTDOWN_GRACE`]). Registered with `atexit`: it runs before the
/// interpreter starts tearing itself down.
#[pyfunction]
pub fn drain(py: Python<'_>) {
    py.detach(|| {
        let deadline = Instant::now() + EXIT_GRACE;
        {
            let mut n = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
            while *n > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                n = SETTLED
                    .wait_timeout(n, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        SHUT_DOWN.store(true, Ordering::SeqCst);
        let rt = RUNTIME.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rt) = rt {
            rt.shutdown_timeout(SHUTDOWN_GRACE);
        }
    });
}

/// `add_done_callback` of the asyncio future: a cancelled future aborts its Rust task.
#[pyclass]
struct AbortOnCancel(Mutex<Option<tokio::task::AbortHandle>>);

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.is_truthy()? {
            if let Some(task) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
        }
        Ok(())
    }
}

/// An asyncio future of the running loop, resolved with `fut`'s output (or its error raised).
pub fn future_into_py<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    if SHUT_DOWN.load(Ordering::SeqCst) {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "the interpreter is exiting: microsandbox's runtime is shut down",
        ));
    }
    let event_loop = pyo3_async_runtimes::tokio::get_current_loop(py)?;
    let py_fut = event_loop.call_method0("create_future")?;
    let target: Py<PyAny> = py_fut.clone().unbind();
    let event_loop: Py<PyAny> = event_loop.unbind();
    let token = InFlight::enter();
    let task = runtime().spawn(async move {
        let result = fut.await;
        // Off the async workers: attaching may wait for the GIL.
        tokio::task::spawn_blocking(move || {
            Python::attach(|py| complete(py, &event_loop, &target, result));
            drop(token); // the GIL is released: this completion is out of Python
        });
    });
    py_fut.call_method1(
        "add_done_callback",
        (AbortOnCancel(Mutex::new(Some(task.abort_handle()))),),
    )?;
    Ok(py_fut)
}

/// Schedule `microsandbox._aio.complete(fut, ok, value)` on the loop. A loop that is closed
/// (the program left `asyncio.run` without awaiting this) has nobody to tell: ignored.
fn complete<T>(py: Python<'_>, event_loop: &Py<PyAny>, fut: &Py<PyAny>, result: PyResult<T>)
where
    T: for<'a> IntoPyObject<'a>,
{
    let (ok, value) = match result.and_then(|v| v.into_py_any(py)) {
        Ok(v) => (true, v),
        Err(e) => (false, e.into_value(py).into_any()),
    };
    let schedule = || -> PyResult<()> {
        let complete = py.import("microsandbox._aio")?.getattr("complete")?;
        event_loop
            .bind(py)
            .call_method1("call_soon_threadsafe", (complete, fut.bind(py), ok, value))?;
        Ok(())
    };
    let _ = schedule();
}
