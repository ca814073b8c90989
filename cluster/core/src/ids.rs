//! Identifiers shared by every crate: cameras, nodes, assignment epochs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Raft node id. Also names the node in object keys (`…-{node}-{epoch}.mp4`).
pub type NodeId = u64;

/// Monotonic per-camera assignment generation: bumped on every change of owner, so two segments
/// of the same camera recorded by different owners never share a key.
pub type Epoch = u64;

/// Longest camera id accepted; ids become object-key path components.
pub const CAMERA_ID_LEN_MAX: usize = 64;

/// An operator-chosen camera id: 1–64 characters from `[A-Za-z0-9._-]`, not starting with `.`.
///
/// The restriction is what makes the id safe as an object-key component and a file name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CameraId(String);

/// Why a string is not a valid [`CameraId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CameraIdError {
    #[error("camera id is empty")]
    Empty,
    #[error("camera id is longer than {CAMERA_ID_LEN_MAX} characters")]
    TooLong,
    #[error("camera id may only contain A-Z a-z 0-9 . _ - (got {0:?})")]
    BadChar(char),
    #[error("camera id may not start with '.'")]
    LeadingDot,
}

impl CameraId {
    pub fn new(s: impl Into<String>) -> Result<CameraId, CameraIdError> {
        let s = s.into();
        if s.is_empty() {
            return Err(CameraIdError::Empty);
        }
        if s.len() > CAMERA_ID_LEN_MAX {
            return Err(CameraIdError::TooLong);
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(CameraIdError::BadChar(c));
        }
        if s.starts_with('.') {
            return Err(CameraIdError::LeadingDot);
        }
        Ok(CameraId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CameraId {
    type Error = CameraIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CameraId::new(s)
    }
}

impl From<CameraId> for String {
    fn from(c: CameraId) -> String {
        c.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_id_validation() {
        assert!(CameraId::new("lobby-1").is_ok());
        assert!(CameraId::new("cam_0.main").is_ok());
        assert_eq!(CameraId::new(""), Err(CameraIdError::Empty));
        assert_eq!(CameraId::new("a/b"), Err(CameraIdError::BadChar('/')));
        assert_eq!(CameraId::new(".."), Err(CameraIdError::LeadingDot));
        assert_eq!(CameraId::new("x".repeat(65)), Err(CameraIdError::TooLong));
        assert!(CameraId::new("x".repeat(64)).is_ok());
    }
}
