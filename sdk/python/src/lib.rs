//! Native core of the `microsandbox` Python package: the module `microsandbox._native`.
//!
//! It wraps [`microsandbox_client::AgentClient`] and the `microsandbox` crate's cluster mode
//! and nothing more: every method returns a Python
//! awaitable (driven by a tokio runtime through `pyo3-async-runtimes`, completed by [`aio`]), requests come in as JSON
//! text and answers go out as plain Python values (dicts, lists, tuples, bytes). The typed,
//! documented API (dataclasses, exceptions, agent discovery) lives in the pure-Python package on
//! top (`python/microsandbox/`), whose hand-written `_native.pyi` describes this module.
//!
//! Errors are raised as the package's own exception classes: [`error::to_pyerr`] hands the
//! error's kind, the agent's error code and the message to `microsandbox.errors._from_native`,
//! which picks the class. That keeps the mapping (and its advice) in one Python file.

mod aio;
mod client;
mod cluster;
mod convert;
mod error;
mod exec;

use pyo3::prelude::*;

/// Native core of the microsandbox SDK (private: use the `microsandbox` package).
#[pymodule(name = "_native")]
mod native {
    #[pymodule_export]
    use crate::client::Client;
    #[pymodule_export]
    use crate::client::Lease;
    #[pymodule_export]
    use crate::cluster::Cluster;
    #[pymodule_export]
    use crate::cluster::{sandbox_object, volume_object};
    #[pymodule_export]
    use crate::exec::ExecStream;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        // Every error code the agent answers with (the package maps each to a class).
        let codes: Vec<&str> = <microsandbox_wire::api::ErrorCode as strum::VariantArray>::VARIANTS
            .iter()
            .map(|c| c.as_str())
            .collect();
        m.add("ERROR_CODES", codes)?;
        // The interpreters' drivers of `PythonSandbox` / `NodeSandbox` (shared with the MCP
        // server's sandbox_run_code).
        m.add("PYTHON_REPL_DRIVER", ::microsandbox::repl::PYTHON_DRIVER)?;
        m.add("NODE_REPL_DRIVER", ::microsandbox::repl::NODE_DRIVER)?;
        // Let completions still handing results to Python finish before the interpreter is
        // torn down (see `aio`).
        let drain = pyo3::wrap_pyfunction!(crate::aio::drain, m)?;
        m.py()
            .import("atexit")?
            .call_method1("register", (drain,))?;
        Ok(())
    }
}

pub use client::Client;
pub use exec::ExecStream;
