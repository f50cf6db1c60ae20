//! JSON request bodies: at most [`LIMIT`] bytes, integers as JSON Schema sees them.
//!
//! JSON Schema (and so the OpenAPI document) counts `244.0` as an integer; serde does not. A
//! client that writes whole numbers as floats (JavaScript's JSON, schemathesis) would be refused
//! a valid request, so whole floats become integers before the typed parse.

use warp::Filter;

/// Largest JSON body the agent reads.
pub const LIMIT: u64 = 1024 * 1024;

/// A body that is not the expected JSON (rendered as `invalid_request`).
#[derive(Debug)]
pub struct BadJson(pub String);
impl warp::reject::Reject for BadJson {}

/// Parse `bytes` as `T`, whole floats read as integers.
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BadJson> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| BadJson(e.to_string()))?;
    whole_floats_to_integers(&mut value);
    serde_json::from_value(value).map_err(|e| BadJson(e.to_string()))
}

fn whole_floats_to_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Exactly representable range only: beyond 2^53 a float is not one integer.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *v = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(whole_floats_to_integers),
        _ => {}
    }
}

/// A body over [`LIMIT`] bytes (rendered as `invalid_request`).
#[derive(Debug)]
pub struct TooLarge;
impl warp::reject::Reject for TooLarge {}

/// The raw body, at most [`LIMIT`] bytes, with a `Content-Length` or chunked (warp's own
/// limit refuses a body without a length, and its refusal lost to "method not allowed").
pub fn bytes() -> impl Filter<Extract = (bytes::Bytes,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(|length: Option<u64>, body| async move {
            if length.is_some_and(|n| n > LIMIT) {
                return Err(warp::reject::custom(TooLarge));
            }
            collect(body).await.map_err(warp::Rejection::from)
        })
}

/// Gather `body` while it stays within [`LIMIT`].
async fn collect<S, B>(body: S) -> Result<bytes::Bytes, CollectError>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures::StreamExt;
    let mut out = bytes::BytesMut::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| CollectError::Read(e.to_string()))?;
        if (out.len() + chunk.remaining()) as u64 > LIMIT {
            return Err(CollectError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// Why a body could not be gathered.
#[derive(Debug)]
enum CollectError {
    TooLarge,
    Read(String),
}

impl From<CollectError> for warp::Rejection {
    fn from(e: CollectError) -> Self {
        match e {
            CollectError::TooLarge => warp::reject::custom(TooLarge),
            CollectError::Read(why) => warp::reject::custom(BadJson(format!("reading it: {why}"))),
        }
    }
}

/// The body as `T` ([`parse`]), at most [`LIMIT`] bytes.
pub fn body<T: serde::de::DeserializeOwned + Send>(
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    bytes().and_then(|b: bytes::Bytes| async move { parse::<T>(&b).map_err(warp::reject::custom) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Req {
        n: u32,
        list: Vec<i64>,
    }

    #[test]
    fn whole_floats_are_integers_fractions_are_not() {
        let r: Req = parse(br#"{"n": 244.0, "list": [-3.0, 7]}"#).unwrap();
        assert_eq!(
            r,
            Req {
                n: 244,
                list: vec![-3, 7]
            }
        );
        // Near 2^52 a float's neighbours are half a unit apart: only a correctly rounded parse
        // reads this as the whole number it is (schemathesis found one that was not).
        let r: Req =
            parse(br#"{"n": 1, "list": [4431048554903090.0, -4431048554903091.0]}"#).unwrap();
        assert_eq!(r.list, vec![4_431_048_554_903_090, -4_431_048_554_903_091]);
        assert!(parse::<Req>(br#"{"n": 2.5, "list": []}"#).is_err());
        assert!(parse::<Req>(br#"{"n": 1e300, "list": []}"#).is_err());
        assert!(parse::<Req>(br#"{"n": 1, "list": [], "x": 0}"#)
            .unwrap_err()
            .0
            .contains("unknown field"));
    }
}
