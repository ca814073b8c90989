//! The camera state the admin API shows (`GET /v1/cameras` `state`), as decided by the recorder
//! core.

/// Live state of one camera's recorder. Serialized with a `state` tag, e.g.
/// `{"state":"backoff","last_error":"...","retry_in_ms":1200,"attempts":2}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CameraState {
    /// A connection attempt is under way (or connected, waiting for the first frame).
    Connecting,
    /// Frames are arriving.
    Recording,
    /// The last attempt failed; the next one starts in `retry_in_ms` (counted from the failure).
    Backoff { last_error: String, retry_in_ms: u64, attempts: u32 },
    /// The camera rejected the credentials; retried with a slower backoff so it does not lock
    /// the account.
    AuthFailed { last_error: String, retry_in_ms: u64, attempts: u32 },
    /// Connected, but opening no new segments: the node's local buffer is full (stop-recording
    /// policy). Frames are dropped (counted) until the buffer drains; the segment open when the
    /// pause began is finished and sealed.
    Paused { last_error: String },
    /// Stopped: not recording and not retrying.
    Disabled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_state_tag() {
        let json = serde_json::to_string(&CameraState::Backoff {
            last_error: "connection refused".into(),
            retry_in_ms: 1200,
            attempts: 2,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"state":"backoff","last_error":"connection refused","retry_in_ms":1200,"attempts":2}"#
        );
        assert_eq!(
            serde_json::to_string(&CameraState::AuthFailed {
                last_error: "401".into(),
                retry_in_ms: 5,
                attempts: 1
            })
            .unwrap(),
            r#"{"state":"auth_failed","last_error":"401","retry_in_ms":5,"attempts":1}"#
        );
        assert_eq!(serde_json::to_string(&CameraState::Recording).unwrap(), r#"{"state":"recording"}"#);
        assert_eq!(
            serde_json::to_string(&CameraState::Paused { last_error: "full".into() }).unwrap(),
            r#"{"state":"paused","last_error":"full"}"#
        );
    }
}
