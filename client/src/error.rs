//! The crate's one error type. It says which field of the caller's input was wrong, or what
//! Lessor answered (the HTTP status and Lessor's own `errors` list), and never carries the token,
//! a password or a wrapping token: answers are read field by field, so a decoding error names
//! the field and never quotes the value it found.

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's input was refused before anything was sent: `field` names it.
    #[error("{field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    /// Lessor answered with an error status; `errors` is the `errors` list of its answer (empty
    /// when it gave none, as for a plain 404).
    #[error("Lessor answered {status}{}", describe_errors(.errors))]
    Api { status: u16, errors: Vec<String> },
    /// Lessor could not be reached, the connection broke, or it took longer than the timeout.
    #[error("cannot reach Lessor: {0}")]
    Transport(#[source] reqwest::Error),
    /// Lessor answered with a success whose body is not what the request promises.
    #[error("unexpected answer from Lessor to {request}: {detail}")]
    UnexpectedAnswer { request: String, detail: String },
    /// A [`LeaseGuard`](crate::LeaseGuard) could not revoke its lease when dropped: the thread
    /// or runtime it revokes on could not be started.
    #[error("cannot revoke lease {lease_id} on drop: {reason}")]
    DropRevocation { lease_id: String, reason: String },
}

fn describe_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

impl Error {
    /// The HTTP status Lessor answered with, when the error is Lessor's answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Lessor's `errors` list, empty for errors that are not Lessor's answer.
    pub fn errors(&self) -> &[String] {
        match self {
            Self::Api { errors, .. } => errors,
            _ => &[],
        }
    }

    /// Whether the same request may succeed later: Lessor unreachable or overloaded (a broken
    /// connection, a timeout, 429 or a 5xx). A 4xx is the request's fault and stays one.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::InvalidInput { .. }
            | Self::UnexpectedAnswer { .. }
            | Self::DropRevocation { .. } => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
