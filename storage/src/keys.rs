//! Object key layout: time-sortable and listable by camera and hour.
//!
//! ```text
//! {prefix}/{camera_id}/{YYYY}/{MM}/{DD}/{HH}/{start_unix_ms:013}-{duration_ms}-{node}-{epoch}.mp4
//! ```
//!
//! - Date and hour are UTC and derived from `start_wall_ms`; [`parse_key`] rejects keys where they
//!   disagree.
//! - `start_unix_ms` is zero-padded to 13 digits so that, within one camera, lexicographic key
//!   order is start-time order (13 digits cover 1970 to 2286). Start times outside
//!   `0..=KEY_WALL_MS_MAX` are a programmer error (the recorder stamps from the wall clock).
//! - `node` and `epoch` make keys unique across owners: two owners of one camera never share an
//!   epoch, so they never write the same key (a conditional create catches it if they do).
//! - An empty prefix gives keys without a leading `/`; a prefix's trailing `/`s are ignored.

use camrec_cluster_core::ids::{CameraId, Epoch, NodeId};
use camrec_node_core::segment::SegmentMeta;
use time::OffsetDateTime;

/// Largest start time a key can carry: the largest 13-digit number of milliseconds (year 2286).
pub const KEY_WALL_MS_MAX: i64 = 9_999_999_999_999;

/// One hour in milliseconds: the granularity of key directories.
pub const HOUR_MS: i64 = 3_600_000;

/// Most hour prefixes [`hour_prefixes`] returns for one call (31 days); longer ranges are cut
/// at this many hours and the caller continues from the next hour.
pub const HOUR_PREFIXES_MAX: usize = 24 * 31;

/// What a key says about its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub camera: CameraId,
    pub start_wall_ms: i64,
    pub duration_ms: u32,
    pub node: NodeId,
    pub epoch: Epoch,
}

/// `{prefix}/{camera}/YYYY/MM/DD/HH/`, the directory holding segments starting in that hour.
fn hour_dir(prefix: &str, camera: &CameraId, start_wall_ms: i64) -> String {
    assert!(
        (0..=KEY_WALL_MS_MAX).contains(&start_wall_ms),
        "start_wall_ms {start_wall_ms} outside the key range 0..={KEY_WALL_MS_MAX}"
    );
    let at = OffsetDateTime::from_unix_timestamp(start_wall_ms.div_euclid(1000))
        .expect("13-digit unix milliseconds are within time's range");
    let prefix = prefix.trim_end_matches('/');
    let sep = if prefix.is_empty() { "" } else { "/" };
    format!(
        "{prefix}{sep}{camera}/{:04}/{:02}/{:02}/{:02}/",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour()
    )
}

/// The object key of a sealed segment.
pub fn object_key(prefix: &str, meta: &SegmentMeta) -> String {
    let dir = hour_dir(prefix, &meta.camera, meta.start_wall_ms);
    format!("{dir}{:013}-{}-{}-{}.mp4", meta.start_wall_ms, meta.duration_ms, meta.owner, meta.epoch)
}

/// Parses a key made by [`object_key`] (with any prefix). `None` for anything else, including
/// keys whose date directories disagree with their start time.
pub fn parse_key(key: &str) -> Option<KeyInfo> {
    let mut parts = key.rsplit('/');
    let file = parts.next()?;
    let hour = parts.next()?;
    let day = parts.next()?;
    let month = parts.next()?;
    let year = parts.next()?;
    let camera = CameraId::new(parts.next()?).ok()?;

    let stem = file.strip_suffix(".mp4")?;
    let mut fields = stem.split('-');
    let start_field = fields.next()?;
    if start_field.len() != 13 {
        return None;
    }
    let start_wall_ms = parse_digits::<i64>(start_field)?;
    let duration_ms = parse_digits::<u32>(fields.next()?)?;
    let node = parse_digits::<u64>(fields.next()?)?;
    let epoch = parse_digits::<u64>(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    // The directories must be exactly what object_key would write for this start time.
    let expected = hour_dir("", &camera, start_wall_ms);
    if expected != format!("{camera}/{year}/{month}/{day}/{hour}/") {
        return None;
    }
    Some(KeyInfo { camera, start_wall_ms, duration_ms, node, epoch })
}

/// Only ASCII digits (no sign, no whitespace), fitting `T`.
fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The hour directories (each ending in `/`) to list for segments of `camera` that *start* in
/// `[from_ms, to_ms)`, oldest first; at most [`HOUR_PREFIXES_MAX`]. Callers who want every
/// segment *overlapping* the range subtract the longest segment duration from `from_ms`.
/// Times are clamped into the key range.
pub fn hour_prefixes(prefix: &str, camera: &CameraId, from_ms: i64, to_ms: i64) -> Vec<String> {
    let from_ms = from_ms.clamp(0, KEY_WALL_MS_MAX);
    let to_ms = to_ms.clamp(0, KEY_WALL_MS_MAX + 1);
    let mut out = Vec::new();
    if from_ms >= to_ms {
        return out;
    }
    let mut hour_start_ms = from_ms - from_ms.rem_euclid(HOUR_MS);
    while hour_start_ms < to_ms && hour_start_ms <= KEY_WALL_MS_MAX && out.len() < HOUR_PREFIXES_MAX {
        out.push(hour_dir(prefix, camera, hour_start_ms));
        hour_start_ms += HOUR_MS;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use camrec_node_core::segment::VideoCodec;
    use rand::{Rng, SeedableRng};

    fn meta(camera: &str, start_wall_ms: i64, duration_ms: u32, owner: u64, epoch: u64) -> SegmentMeta {
        SegmentMeta {
            camera: CameraId::new(camera).unwrap(),
            owner,
            epoch,
            seq: 0,
            start_wall_ms,
            duration_ms,
            bytes: 0,
            crc32c: 0,
            video_codec: VideoCodec::H264,
            has_audio: false,
            video_frames: 0,
        }
    }

    #[test]
    fn key_layout() {
        // 2024-03-05T07:08:09.123Z
        let m = meta("lobby-1", 1_709_622_489_123, 4000, 7, 3);
        assert_eq!(object_key("rec", &m), "rec/lobby-1/2024/03/05/07/1709622489123-4000-7-3.mp4");
        assert_eq!(object_key("", &m), "lobby-1/2024/03/05/07/1709622489123-4000-7-3.mp4");
        assert_eq!(object_key("a/b/", &m), "a/b/lobby-1/2024/03/05/07/1709622489123-4000-7-3.mp4");
        assert_eq!(object_key("", &meta("c", 5, 1, 0, 0)), "c/1970/01/01/00/0000000000005-1-0-0.mp4");
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in [
            "",
            "x.mp4",
            "c/1970/01/01/00/0000000000005-1-0.mp4",
            "c/1970/01/01/00/0000000000005-1-0-0-9.mp4",
            "c/1970/01/01/00/000000000005-1-0-0.mp4",
            "c/1970/01/01/01/0000000000005-1-0-0.mp4",
            "c/1970/1/01/00/0000000000005-1-0-0.mp4",
            "c/1970/01/01/00/0000000000005-1-0-0.mkv",
            "c/1970/01/01/00/0000000000005-+1-0-0.mp4",
            ".c/1970/01/01/00/0000000000005-1-0-0.mp4",
            "c/1970/01/01/00/0000000000005-99999999999-0-0.mp4",
        ] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
        assert!(parse_key("c/1970/01/01/00/0000000000005-1-0-0.mp4").is_some());
    }

    /// Property-ish: random metas round-trip through key and parse, and key order within one
    /// camera is start order.
    #[test]
    fn round_trip_and_sort_order_random() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
        let cameras = ["a", "cam-1", "x.y_z", "Z9"];
        let prefixes = ["", "p", "deep/er/prefix", "t/"];
        let mut keys_by_camera: std::collections::BTreeMap<&str, Vec<(i64, String)>> = Default::default();
        for _ in 0..2000 {
            let camera = cameras[rng.gen_range(0..cameras.len())];
            let start = if rng.gen_bool(0.1) {
                rng.gen_range(0..=KEY_WALL_MS_MAX)
            } else {
                rng.gen_range(0..4_000_000_000_000)
            };
            let m = meta(camera, start, rng.gen(), rng.gen(), rng.gen());
            let prefix = prefixes[rng.gen_range(0..prefixes.len())];
            let key = object_key(prefix, &m);
            let info = parse_key(&key).unwrap_or_else(|| panic!("{key} does not parse"));
            assert_eq!(
                info,
                KeyInfo {
                    camera: m.camera.clone(),
                    start_wall_ms: m.start_wall_ms,
                    duration_ms: m.duration_ms,
                    node: m.owner,
                    epoch: m.epoch
                }
            );
            // The key lies under exactly the hour prefix of its start.
            let hours = hour_prefixes(prefix, &m.camera, start, start + 1);
            assert_eq!(hours.len(), 1);
            assert!(key.starts_with(&hours[0]), "{key} not under {}", hours[0]);
            keys_by_camera.entry(camera).or_default().push((start, object_key("", &m)));
        }
        for (_, mut v) in keys_by_camera {
            v.sort_by(|a, b| a.1.cmp(&b.1));
            assert!(v.windows(2).all(|w| w[0].0 <= w[1].0), "key order is not start order");
        }
    }

    #[test]
    fn hour_prefixes_cover_range() {
        let cam = CameraId::new("c").unwrap();
        let t0 = 1_709_622_489_123; // 2024-03-05T07:08:09.123Z
        assert_eq!(hour_prefixes("r", &cam, t0, t0), Vec::<String>::new());
        assert_eq!(hour_prefixes("r", &cam, t0, t0 + 1), vec!["r/c/2024/03/05/07/"]);
        assert_eq!(
            hour_prefixes("", &cam, t0, t0 + 2 * HOUR_MS),
            vec!["c/2024/03/05/07/", "c/2024/03/05/08/", "c/2024/03/05/09/"]
        );
        // Day rollover.
        let late = 1_709_679_600_000; // 2024-03-05T23:00:00Z
        assert_eq!(
            hour_prefixes("", &cam, late, late + HOUR_MS + 1),
            vec!["c/2024/03/05/23/", "c/2024/03/06/00/"]
        );
        assert_eq!(hour_prefixes("", &cam, 0, i64::MAX).len(), HOUR_PREFIXES_MAX);
        assert_eq!(hour_prefixes("", &cam, -5, 1), vec!["c/1970/01/01/00/"]);
    }
}
