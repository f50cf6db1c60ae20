//! `_native.ExecStream`: one streaming exec (events out; stdin, signals and resizes in).

use crate::aio::future_into_py;
use crate::error::IntoPyResult;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use microsandbox_client::{ClientError, ExecEvent, ExecInput};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Most events handed over in one batch.
const MAX_BATCH_EVENTS: usize = 256;
/// Most output bytes handed over in one batch (more may follow in the next one).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// An [`ExecEvent`] as the tuple Python sees: `("started", pid)`, `("stdout", bytes)`,
/// `("stderr", bytes)` or `("exited", exit_code, signal, timed_out)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event(pub ExecEvent);

impl<'py> IntoPyObject<'py> for Event {
    type Target = PyTuple;
    type Output = Bound<'py, PyTuple>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        let bytes = |b: &Bytes| PyBytes::new(py, b);
        match self.0 {
            ExecEvent::Started { pid } => ("started", pid).into_pyobject(py),
            ExecEvent::Stdout(b) => ("stdout", bytes(&b)).into_pyobject(py),
            ExecEvent::Stderr(b) => ("stderr", bytes(&b)).into_pyobject(py),
            ExecEvent::Exited {
                exit_code,
                signal,
                timed_out,
            } => ("exited", exit_code, signal, timed_out).into_pyobject(py),
        }
    }
}

/// Output size of an event, for batching.
fn event_len(ev: &ExecEvent) -> usize {
    match ev {
        ExecEvent::Stdout(b) | ExecEvent::Stderr(b) => b.len(),
        _ => 0,
    }
}

/// A running streaming exec. Events are read with `next_events()` (one reader at a time);
/// the input methods may be called concurrently from other tasks.
#[pyclass(frozen, module = "microsandbox._native")]
pub struct ExecStream {
    events: Arc<Mutex<Reader>>,
    input: ExecInput,
}

/// The receiving side, and an error received after events that were already handed over.
struct Reader {
    stream: microsandbox_client::ExecStream,
    pending: Option<ClientError>,
}

impl ExecStream {
    pub fn new(stream: microsandbox_client::ExecStream) -> Self {
        ExecStream {
            input: stream.input(),
            events: Arc::new(Mutex::new(Reader {
                stream,
                pending: None,
            })),
        }
    }
}

#[pymethods]
impl ExecStream {
    /// Waits for the next event, then also takes those already received (up to a few MiB);
    /// resolves to a list of event tuples, empty once the exec is over.
    fn next_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let events = self.events.clone();
        future_into_py(py, async move {
            let mut reader = events.lock().await;
            if let Some(e) = reader.pending.take() {
                return Err(e).py_err();
            }
            let mut batch = Vec::new();
            let Some(first) = reader.stream.next().await else {
                return Ok(batch);
            };
            let first = first.py_err()?;
            let mut size = event_len(&first);
            batch.push(Event(first));
            while batch.len() < MAX_BATCH_EVENTS && size < MAX_BATCH_BYTES {
                match reader.stream.next().now_or_never() {
                    Some(Some(Ok(ev))) => {
                        size += event_len(&ev);
                        batch.push(Event(ev));
                    }
                    // Hand over what came before; the error is the next call's answer.
                    Some(Some(Err(e))) => {
                        reader.pending = Some(e);
                        break;
                    }
                    _ => break,
                }
            }
            Ok(batch)
        })
    }

    /// Writes bytes to the process's stdin (needs `stdin=True` in the request).
    fn write_stdin<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let data = Bytes::copy_from_slice(data);
        let input = self.input.clone();
        future_into_py(py, async move { input.write_stdin(data).await.py_err() })
    }

    /// Closes the process's stdin (it reads EOF).
    fn close_stdin<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let input = self.input.clone();
        future_into_py(py, async move { input.close_stdin().await.py_err() })
    }

    /// Sends a signal (e.g. 15) to the process group.
    fn signal<'py>(&self, py: Python<'py>, signal: i32) -> PyResult<Bound<'py, PyAny>> {
        let input = self.input.clone();
        future_into_py(py, async move { input.signal(signal).await.py_err() })
    }

    /// Resizes the terminal of a tty exec.
    fn resize<'py>(&self, py: Python<'py>, rows: u16, cols: u16) -> PyResult<Bound<'py, PyAny>> {
        let input = self.input.clone();
        future_into_py(py, async move { input.resize(rows, cols).await.py_err() })
    }

    fn __repr__(&self) -> String {
        let pid = self.events.try_lock().ok().and_then(|r| r.stream.pid());
        match pid {
            Some(pid) => format!("<microsandbox._native.ExecStream pid={pid}>"),
            None => "<microsandbox._native.ExecStream>".to_string(),
        }
    }
}
