//! volcore's two wire protocols, as types.
//!
//! - The REST API volmaster serves: [`paths`] (every route, written once; the server
//!   routes and documents these constants), [`types`] (request and response bodies),
//!   [`ErrorCode`] (what an error means, and its HTTP status) and [`Client`], a typed
//!   async client over reqwest that volcli, the load generator and the system tests use.
//! - Docker's VolumeDriver protocol volplugin serves: [`docker`].
//!
//! Bodies are volcore's own types where the library has them ([`volcore::Policy`],
//! [`volcore::VolumeInfo`], [`volcore::CheckReport`] …), so a client reads exactly what
//! the engine returned.

mod client;
pub mod docker;
mod error;
pub mod paths;
pub mod tls;
pub mod types;

pub use client::{Client, ClientError, RemoveOptions};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use tls::{TlsFileError, TlsFiles};
pub use types::{Identity, WhoAmI};
