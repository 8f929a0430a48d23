//! Errors by meaning: each library error becomes an [`ErrorCode`], whose HTTP status is
//! fixed by the API crate; the body is `{"error":{"code":"…","message":"…"}}`.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::warn;
use volcore::{DriverError, EngineError, KvError, LockError};
use volcore_api::{ErrorBody, ErrorCode, ErrorDetail};

/// An API error: a code (which fixes the status) and a message that says what to do.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub(crate) fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The body, without logging (for answers that are a state, such as `/readyz`).
    pub(crate) fn quiet(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            warn!(status = %self.status(), code = %self.code, message = %self.message, "request failed");
        }
        self.quiet()
    }
}

fn kv_code(e: &KvError) -> ErrorCode {
    match e {
        KvError::Unavailable { .. } => ErrorCode::StoreUnavailable,
        KvError::Timeout { .. } => ErrorCode::StoreTimeout,
        KvError::Conflict { .. } => ErrorCode::Conflict,
        KvError::NotFound { .. } => ErrorCode::NotFound,
        KvError::Invalid { .. } => ErrorCode::BadRequest,
        _ => ErrorCode::StoreError,
    }
}

fn engine_code(e: &EngineError) -> ErrorCode {
    use ErrorCode as C;
    match e {
        EngineError::PolicyNotFound { .. } => C::PolicyNotFound,
        EngineError::RevisionNotFound { .. } => C::RevisionNotFound,
        EngineError::VolumeNotFound { .. } => C::VolumeNotFound,
        EngineError::VolumeExists { .. } => C::VolumeExists,
        EngineError::PolicyInUse { .. } => C::PolicyInUse,
        EngineError::Locked(l) => match l.as_ref() {
            LockError::Held { .. } => C::Locked,
            _ => C::Conflict,
        },
        EngineError::Invalid(_) => C::Invalid,
        EngineError::BadRequest(_) | EngineError::NoSnapshots { .. } => C::BadRequest,
        EngineError::BackendNotServed { .. } => C::BackendNotServed,
        EngineError::ChangedMeanwhile { .. } | EngineError::Fenced { .. } => C::ChangedMeanwhile,
        EngineError::SignalNotAllowed { .. } => C::SignalNotAllowed,
        EngineError::LockLost { .. } => C::LockLost,
        EngineError::LeftoverStorage { .. } => C::LeftoverStorage,
        EngineError::OutcomeUnknown { .. } => C::OutcomeUnknown,
        EngineError::SessionGone { .. } => C::SessionGone,
        EngineError::Driver { source, .. } => match source.as_ref() {
            DriverError::NotFound { .. } => C::StorageNotFound,
            DriverError::AlreadyExists { .. } => C::StorageExists,
            DriverError::Busy { .. } => C::StorageBusy,
            DriverError::Invalid(_) => C::StorageInvalid,
            DriverError::Timeout { .. } => C::StorageTimeout,
            _ => C::StorageFailed,
        },
        EngineError::NoLease => C::NoLease,
        EngineError::Kv(k) => kv_code(k),
        _ => C::Internal,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::new(engine_code(&e), e.to_string())
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        Self::new(kv_code(&e), e.to_string())
    }
}

impl From<volcore::AuthError> for ApiError {
    fn from(e: volcore::AuthError) -> Self {
        use volcore::AuthError as A;
        let code = match &e {
            A::BadRole(_) | A::BadSubject { .. } => ErrorCode::BadRequest,
            A::BadTenant { .. } => ErrorCode::Invalid,
            A::NoTenant(_) => ErrorCode::TenantNotFound,
            A::NoRole(_) => ErrorCode::RoleNotFound,
            A::Kv(k) => kv_code(k),
            _ => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NoSuchRoute,
        "no such route; see /v1/openapi.json",
    )
}

pub(crate) async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed here; see /v1/openapi.json"),
    )
}
