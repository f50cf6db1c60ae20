//! Rendering of results and errors.

use microsandbox_wire::api::{ApiError, ErrorCode};
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::error::AgentError;

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

pub fn ok<T: Serialize>(body: &T) -> Response {
    json(StatusCode::OK, body)
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub fn api_error(e: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, e)
}

pub fn error(e: &AgentError) -> Response {
    api_error(&e.to_api())
}

/// Render a handler result.
pub fn result<T: Serialize>(r: Result<T, AgentError>) -> Response {
    match r {
        Ok(v) => ok(&v),
        Err(e) => error(&e),
    }
}

/// Turn warp's rejections into typed JSON errors.
pub async fn recover(rej: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    let (code, message) = if rej.find::<super::auth::Unauthorized>().is_some() {
        (
            ErrorCode::Unauthorized,
            "missing or invalid bearer token (see <state-dir>/agent.token)".to_string(),
        )
    } else if let Some(super::auth::Forbidden(why)) = rej.find::<super::auth::Forbidden>() {
        (ErrorCode::Forbidden, why.clone())
    } else if let Some(e) = rej.find::<warp::filters::body::BodyDeserializeError>() {
        (
            ErrorCode::InvalidRequest,
            format!("invalid request body: {e}"),
        )
    } else if let Some(e) = rej.find::<super::json::BadJson>() {
        (
            ErrorCode::InvalidRequest,
            format!("invalid request body: {}", e.0),
        )
    } else if rej.find::<super::json::TooLarge>().is_some() {
        (
            ErrorCode::InvalidRequest,
            format!(
                "request body too large (limit {} bytes)",
                super::json::LIMIT
            ),
        )
    } else if let Some(e) = rej.find::<warp::reject::InvalidQuery>() {
        (ErrorCode::InvalidRequest, format!("invalid query: {e}"))
    } else if rej.is_not_found() {
        return Ok(json(
            StatusCode::NOT_FOUND,
            &ApiError {
                code: ErrorCode::InvalidRequest,
                message: "no such route".into(),
            },
        ));
    } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            &ApiError {
                code: ErrorCode::InvalidRequest,
                message: "method not allowed".into(),
            },
        ));
    } else if rej.find::<warp::reject::PayloadTooLarge>().is_some() {
        (ErrorCode::InvalidRequest, "request body too large".into())
    } else {
        (ErrorCode::InvalidRequest, format!("bad request: {rej:?}"))
    };
    Ok(api_error(&ApiError { code, message }))
}
