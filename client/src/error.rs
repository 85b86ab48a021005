//! The one error type of the client: connection problems, and gRPC status codes mapped to
//! variants that say what went wrong.

use std::io;
use std::path::PathBuf;

/// Everything a [`Client`](crate::Client) call can fail with.
///
/// Server errors keep the daemon's own message (it names the unit, node or field); the
/// variant says which kind of failure it was, following the codes `proto/receptor/v1`
/// documents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address could not be parsed (see [`Target::parse`](crate::Target::parse)).
    #[error("invalid socket address {0:?}")]
    InvalidAddress(String),
    /// A Unix socket path that does not exist.
    #[error("socket path does not exist: {}", .0.display())]
    NoSuchSocket(PathBuf),
    /// The socket or TCP address did not accept the connection.
    #[error("could not connect to {target}")]
    Connect {
        /// Where we tried to connect.
        target: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Connecting took longer than the target's connect timeout.
    #[error("timed out connecting to {0}")]
    ConnectTimeout(String),
    /// Certificates or keys could not be loaded, or the TLS handshake failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The peer did not greet like a receptor control socket.
    #[error("{target} is not a receptor control socket (it sent {greeting:?})")]
    NotReceptor {
        /// Where we connected.
        target: String,
        /// The first line it sent.
        greeting: String,
    },
    /// The control socket does not accept the `grpc` upgrade: an older or Go receptor.
    #[error(
        "node {node} does not speak gRPC on its control socket (it answered {answer:?}); \
         it is probably a Go receptor: use the Python receptorctl with it"
    )]
    GrpcNotSupported {
        /// The node ID from the greeting.
        node: String,
        /// What it answered to `grpc`.
        answer: String,
    },
    /// INVALID_ARGUMENT: a field is missing, malformed or out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// NOT_FOUND: no such unit, node or service.
    #[error("not found: {0}")]
    NotFound(String),
    /// UNAVAILABLE: the mesh could not deliver, or the daemon is going away; a retry later
    /// may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// FAILED_PRECONDITION: not possible in this state or configuration.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// PERMISSION_DENIED: a signature or certificate does not allow the operation.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// CANCELLED: the call was cancelled.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// DEADLINE_EXCEEDED: the call's deadline passed.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// Any other gRPC status (INTERNAL, UNKNOWN, ...).
    #[error("server error ({code:?}): {message}")]
    Rpc {
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The server sent something the contract does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Reading the payload to submit failed; the submission was aborted (the unit fails
    /// rather than running on a truncated payload).
    #[error("reading the payload: {0}")]
    Payload(#[source] io::Error),
    /// The gRPC channel itself failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl Error {
    /// The gRPC code, for errors that came from the server.
    pub fn code(&self) -> Option<tonic::Code> {
        Some(match self {
            Self::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::Unavailable(_) => tonic::Code::Unavailable,
            Self::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Self::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Self::Cancelled(_) => tonic::Code::Cancelled,
            Self::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
            Self::Rpc { code, .. } => *code,
            _ => return None,
        })
    }

    /// The server's own message for server errors (as the classic protocol's `ERROR:` line
    /// would carry it), else the whole error text.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidArgument(m)
            | Self::NotFound(m)
            | Self::Unavailable(m)
            | Self::FailedPrecondition(m)
            | Self::PermissionDenied(m)
            | Self::Cancelled(m)
            | Self::DeadlineExceeded(m)
            | Self::Rpc { message: m, .. } => m.clone(),
            other => other.to_string(),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        // A transport failure under a call carries its cause only in the source chain.
        let message = if message.is_empty() {
            std::error::Error::source(&status)
                .map_or_else(|| format!("{:?}", status.code()), ToString::to_string)
        } else {
            message
        };
        match status.code() {
            tonic::Code::InvalidArgument => Self::InvalidArgument(message),
            tonic::Code::NotFound => Self::NotFound(message),
            tonic::Code::Unavailable => Self::Unavailable(message),
            tonic::Code::FailedPrecondition => Self::FailedPrecondition(message),
            tonic::Code::PermissionDenied => Self::PermissionDenied(message),
            tonic::Code::Cancelled => Self::Cancelled(message),
            tonic::Code::DeadlineExceeded => Self::DeadlineExceeded(message),
            code => Self::Rpc { code, message },
        }
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::NotFound(_) => io::ErrorKind::NotFound,
            Error::Unavailable(_) | Error::Transport(_) => io::ErrorKind::ConnectionAborted,
            Error::PermissionDenied(_) => io::ErrorKind::PermissionDenied,
            Error::InvalidArgument(_) => io::ErrorKind::InvalidInput,
            Error::DeadlineExceeded(_) => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_variants_and_keep_the_message() {
        let e = Error::from(tonic::Status::not_found("unknown work unit abc"));
        assert!(matches!(e, Error::NotFound(ref m) if m == "unknown work unit abc"));
        assert_eq!(e.code(), Some(tonic::Code::NotFound));
        assert_eq!(e.message(), "unknown work unit abc");
        assert_eq!(e.to_string(), "not found: unknown work unit abc");
        let e = Error::from(tonic::Status::internal("disk"));
        assert!(matches!(
            e,
            Error::Rpc {
                code: tonic::Code::Internal,
                ..
            }
        ));
        assert_eq!(
            io::Error::from(Error::from(tonic::Status::unavailable("x"))).kind(),
            io::ErrorKind::ConnectionAborted
        );
    }
}
