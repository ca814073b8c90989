//! The one versioned binary codec: postcard behind a format-version byte.
//!
//! Everything camrec persists or sends between nodes in binary (Raft entries, snapshots, the
//! segment index) goes through [`encode`] / [`decode`]. The first byte is [`FORMAT_VERSION`]; a
//! reader refuses a version it does not know instead of misreading it. When a persisted type
//! changes shape, bump the version and keep a decoder for the old one here.

use serde::{de::DeserializeOwned, Serialize};

/// Current on-disk/on-wire format version.
pub const FORMAT_VERSION: u8 = 1;

/// Why bytes could not be decoded. Always data corruption or a version skew: never retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty input")]
    Empty,
    #[error("unknown format version {found} (this build reads {FORMAT_VERSION})")]
    UnknownVersion { found: u8 },
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("cannot encode {what}: {message}")]
    Encode { what: &'static str, message: String },
}

/// Encodes `value` as `[FORMAT_VERSION] ++ postcard(value)`.
pub fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_extend(value, vec![FORMAT_VERSION])
        .map_err(|e| CodecError::Encode { what, message: e.to_string() })
}

/// Decodes bytes produced by [`encode`]; rejects unknown versions and trailing garbage.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    let (value, rest) = postcard::take_from_bytes(body)
        .map_err(|e| CodecError::Malformed { what, message: e.to_string() })?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed { what, message: format!("{} trailing bytes", rest.len()) });
    }
    Ok(value)
}

/// Decodes a value from the front of bytes produced by [`encode`], ignoring what follows (to
/// read a leading version field before the whole value).
pub fn decode_prefix<'a, T: DeserializeOwned>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<(T, &'a [u8]), CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed { what, message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let v = (7u32, String::from("cam"), vec![1u8, 2, 3]);
        let bytes = encode("t", &v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<(u32, String, Vec<u8>)>("t", &bytes).unwrap(), v);

        let mut future = bytes.clone();
        future[0] = FORMAT_VERSION + 1;
        assert_eq!(
            decode::<(u32, String, Vec<u8>)>("t", &future),
            Err(CodecError::UnknownVersion { found: FORMAT_VERSION + 1 })
        );
        assert_eq!(decode::<u32>("t", &[]), Err(CodecError::Empty));
        let mut trailing = bytes;
        trailing.push(0);
        assert!(matches!(
            decode::<(u32, String, Vec<u8>)>("t", &trailing),
            Err(CodecError::Malformed { .. })
        ));
    }
}
