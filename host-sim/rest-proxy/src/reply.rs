//! [`Reply`]: an answer before it becomes a `hyper::Response`, what every handler returns and the
//! server sends.

use bytes::Bytes;
use hyper::StatusCode;

use crate::error::ApiError;

/// An answer before it becomes a `hyper::Response`.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body.
    pub body: Bytes,
    /// `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Reply {
    /// A JSON reply of any serializable value.
    pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, content_type: &'static str, value: &T) -> Reply {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Reply {
            status,
            content_type,
            body: Bytes::from(body),
            allow: None,
        }
    }

    /// Confluent's error envelope for `e`.
    pub fn error(e: &ApiError, content_type: &'static str) -> Reply {
        Reply::json(e.status, content_type, &e.body())
    }
}
