//! An async client for Lessor, the dynamic database credentials broker, over its Vault-compatible
//! HTTP API.
//!
//! - [`Client`]: dynamic credentials ([`Client::creds`], optionally response-wrapped), lease
//!   renewal and revocation, static credentials, unwrapping.
//! - [`LeaseGuard`]: keeps a lease renewed in the background and revokes it when dropped, also
//!   when a test panics.
//! - [`testing::throwaway_database`]: a database and user of a test's own, gone when it ends.
//! - [`Error`]: every failure, with Lessor's HTTP status and `errors` list when Lessor answered;
//!   never the token or a password. Passwords travel as [`Secret`], whose `Debug` redacts them.
//!
//! ```no_run
//! use lessor_client::{Client, LeaseGuard};
//!
//! # async fn example() -> Result<(), lessor_client::Error> {
//! let client = Client::new("http://127.0.0.1:8200", "my-token")?;
//! let credential = client.creds("app-readonly").await?;
//! let _guard = LeaseGuard::new(&client, &credential.lease);
//! let conninfo = format!(
//!     "host=127.0.0.1 user={} password={}",
//!     credential.username,
//!     credential.password.expose()
//! );
//! // ... connect and work; the lease is renewed meanwhile and revoked when `_guard` drops.
//! # let _ = conninfo;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - `client`: [`Client`], [`ClientBuilder`] and the requests.
//! - `credential`: what the answers hold, read field by field.
//! - `guard`: [`LeaseGuard`] and its renewal task.
//! - [`testing`]: helpers for integration tests.
//! - `error`: [`Error`].

#![forbid(unsafe_code)]

mod client;
mod credential;
mod error;
mod guard;
pub mod testing;

pub use client::{Client, ClientBuilder};
pub use credential::{Credential, Lease, StaticCredential, WrappedResponse};
pub use error::{Error, Result};
pub use guard::{LeaseGuard, Renewal};
pub use lessor_plugin::Secret;
