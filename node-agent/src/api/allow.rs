//! The `Allow` header of a 405 answer (RFC 9110 §15.5.6): the methods of the route the path
//! matches, read from the API's own OpenAPI document (`node-agent/openapi.yaml`, compiled in),
//! so the header and the document cannot disagree.

use std::sync::LazyLock;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

/// One documented path: its segments (`None` for a `{parameter}`) and methods, upper case.
struct Route {
    segments: Vec<Option<String>>,
    methods: Vec<String>,
}

static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| parse(include_str!("../../openapi.yaml")));

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Paths and methods of an OpenAPI document's `paths:` (two-space indented path keys, their
/// operations four spaces in).
fn parse(doc: &str) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    let mut in_paths = false;
    for line in doc.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(path) = line
            .strip_prefix("  /")
            .and_then(|p| p.trim_end().strip_suffix(':'))
        {
            let segments = path
                .split('/')
                .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                .collect();
            routes.push(Route {
                segments,
                methods: Vec::new(),
            });
        } else if let Some(op) = line
            .strip_prefix("    ")
            .and_then(|l| l.trim_end().strip_suffix(':'))
        {
            if let (true, Some(route)) = (METHODS.contains(&op), routes.last_mut()) {
                route.methods.push(op.to_ascii_uppercase());
                // One order whatever the document's: GET, PUT, POST, DELETE, ...
                route
                    .methods
                    .sort_by_key(|m| METHODS.iter().position(|x| x.eq_ignore_ascii_case(m)));
            }
        }
    }
    routes
}

/// The methods of the documented route `path` matches, e.g. `"GET, DELETE"`.
pub fn methods(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    ROUTES
        .iter()
        .find(|r| {
            r.segments.len() == segments.len()
                && r.segments
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.as_deref().is_none_or(|p| p == *s))
        })
        .map(|r| r.methods.join(", "))
}

/// Add `Allow` to a 405 answer for `path`.
pub fn with_allow(path: &str, mut response: Response) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(v) = methods(path).and_then(|m| HeaderValue::from_str(&m).ok()) {
            response.headers_mut().insert(header::ALLOW, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_each_routes_methods() {
        assert_eq!(methods("/healthz").as_deref(), Some("GET"));
        assert_eq!(methods("/v1/sandboxes").as_deref(), Some("GET, POST"));
        let one = methods("/v1/sandboxes/job-1").unwrap();
        assert!(one.contains("GET") && one.contains("DELETE"), "{one}");
        assert_eq!(methods("/v1/nothing/here"), None);
        assert!(ROUTES.len() > 25, "{} routes", ROUTES.len());
    }

    #[test]
    fn only_405_answers_get_the_header() {
        let mut r = Response::new("x".into());
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        let r = with_allow("/v1/volumes", r);
        assert_eq!(r.headers()[header::ALLOW], "GET, POST");
        let ok = with_allow("/v1/volumes", Response::new("x".into()));
        assert!(ok.headers().get(header::ALLOW).is_none());
    }
}
