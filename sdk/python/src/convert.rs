//! Values crossing into Python: JSON documents as dicts/lists (by `pythonize`), byte buffers as
//! `bytes`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A JSON value that becomes the equivalent Python value (dict, list, str, int, float, bool, None).
#[derive(Debug, Clone, PartialEq)]
pub struct Json(pub Value);

impl Json {
    /// Serializes any API type.
    pub fn of<T: Serialize>(v: &T) -> PyResult<Self> {
        serde_json::to_value(v)
            .map(Json)
            .map_err(|e| PyValueError::new_err(format!("cannot encode answer: {e}")))
    }
}

/// Parses a request given as JSON text into an API type, as `ValueError` when it does not fit.
pub fn parse_request<T: DeserializeOwned>(what: &str, json: &str) -> PyResult<T> {
    serde_json::from_str(json).map_err(|e| PyValueError::new_err(format!("invalid {what}: {e}")))
}

impl<'py> IntoPyObject<'py> for Json {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(pythonize::pythonize(py, &self.0)?)
    }
}

/// Bytes that become a Python `bytes` object (a `Vec<u8>` would become a list of ints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutBytes(pub Vec<u8>);

impl<'py> IntoPyObject<'py> for OutBytes {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated() {
        let r: PyResult<microsandbox_client::api::StopSandbox> =
            parse_request("stop request", r#"{"timeout_ms": 5}"#);
        assert_eq!(r.unwrap().timeout_ms, Some(5));
        let r: PyResult<microsandbox_client::api::StopSandbox> =
            parse_request("stop request", r#"{"bogus": 1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn json_of_api_types() {
        let m = microsandbox_client::api::Metrics {
            name: "a".into(),
            ..Default::default()
        };
        let j = Json::of(&m).unwrap();
        assert_eq!(j.0["name"], "a");
        assert_eq!(j.0["memory_limit_bytes"], Value::Null);
    }
}
