//! The one error type of this crate: a [`StoreError`] carries an [`ErrorKind`] that tells the
//! caller what to do (retry, treat as absent, stop, raise a data-loss alarm) and a message for
//! humans. Programmer errors are assertions, not values (style.md §7).

use std::fmt;

use camrec_cluster_core::codec::CodecError;

/// What the caller should do about a failed storage operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient: the same request may succeed later (5xx, SlowDown, timeouts, connection
    /// failures, interrupted IO). Retry with backoff.
    Retryable,
    /// The object, key or record does not exist.
    NotFound,
    /// A conditional create hit a *different* object already stored at the key. Never retried,
    /// never overwritten: it means two writers disagree about a key's content.
    Conflict,
    /// Cannot succeed without operator action (bad credentials, missing bucket, invalid key,
    /// unwritable directory). Retrying will not help.
    Fatal,
    /// Bytes are not what they were promised to be (checksum or size mismatch, corrupt index
    /// record, file missing for an index record). Raise an alarm; do not retry blindly.
    DataLoss,
}

/// A failed storage operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct StoreError {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StoreError {
        StoreError { kind, message: message.into() }
    }

    pub fn retryable(message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::Retryable, message)
    }

    pub fn not_found(message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::Conflict, message)
    }

    pub fn fatal(message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::Fatal, message)
    }

    pub fn data_loss(message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::DataLoss, message)
    }

    /// True when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }

    /// Classifies a local IO error; `context` says what was being done to which path.
    pub fn io(context: impl fmt::Display, err: &std::io::Error) -> StoreError {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::Interrupted | Io::WouldBlock | Io::TimedOut => ErrorKind::Retryable,
            // A full disk may drain as uploads complete; the caller backs off and sheds load.
            Io::StorageFull | Io::QuotaExceeded => ErrorKind::Retryable,
            Io::InvalidData | Io::UnexpectedEof => ErrorKind::DataLoss,
            _ => ErrorKind::Fatal,
        };
        StoreError::new(kind, format!("{context}: {err}"))
    }

    /// Classifies a sled error.
    pub fn sled(context: impl fmt::Display, err: &sled::Error) -> StoreError {
        match err {
            sled::Error::Io(io) => StoreError::io(format_args!("{context} (sled)"), io),
            sled::Error::Corruption { .. } => {
                StoreError::data_loss(format!("{context}: sled index corrupt: {err}"))
            }
            _ => StoreError::fatal(format!("{context}: sled: {err}")),
        }
    }

    /// A record that cannot be decoded is corruption or a version skew: never retryable.
    pub fn codec(context: impl fmt::Display, err: &CodecError) -> StoreError {
        StoreError::data_loss(format!("{context}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(StoreError::io("open x", &nf).kind, ErrorKind::NotFound);
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(StoreError::io("write x", &full).is_retryable());
        let perm = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(StoreError::io("open x", &perm).kind, ErrorKind::Fatal);
        assert_eq!(StoreError::conflict("k").to_string(), "Conflict: k");
    }
}
