//! The recording index: what a camera recorded in a time range, read from the object store's
//! time-sortable keys, with duplicate recordings (two owners during a partition or a drain)
//! merged and the gaps between them listed.
//!
//! [`merge`] is pure and unit-tested with data; [`list_recordings`] is the IO around it.

use camrec_cluster_core::ids::{CameraId, Epoch, NodeId};
use serde::Serialize;

use crate::error::StoreError;
use crate::keys::{hour_prefixes, parse_key, KeyInfo};
use crate::object_store::ObjectStore;

/// Longest segment the index looks back for: a segment starting this long before `from` can
/// still overlap the range.
pub const SEGMENT_LOOKBACK_MS: i64 = 60 * 60 * 1000;

/// Two segments whose edges are this close count as contiguous (wall-clock slew and
/// millisecond rounding make consecutive segments abut within a few ms).
pub const GAP_TOLERANCE_MS: i64 = 250;

/// Most segments one listing returns; the response says when it stopped early.
pub const SEGMENTS_PER_PAGE_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingSegment {
    pub key: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub bytes: u64,
    pub node: NodeId,
    pub epoch: Epoch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordingList {
    /// Segments covering the range, by start time; a segment wholly covered by others is left
    /// out (counted in `duplicates`).
    pub segments: Vec<RecordingSegment>,
    pub gaps: Vec<Gap>,
    pub duplicates: usize,
    /// The listing stopped at [`SEGMENTS_PER_PAGE_MAX`]; continue from the last segment's end.
    pub truncated: bool,
}

/// Merges raw listed segments into a minimal cover of `[from_ms, to_ms)` plus the gaps in it.
///
/// Greedy interval cover: of the segments starting at or before the covered edge, take the one
/// reaching furthest; the others are duplicates. When none starts at the edge, the earliest next
/// one does (a hole longer than [`GAP_TOLERANCE_MS`] before it is a gap). Short segments are
/// kept whenever they are the only recording of their time.
pub fn merge(mut raw: Vec<RecordingSegment>, from_ms: i64, to_ms: i64) -> RecordingList {
    raw.retain(|s| s.end_ms > from_ms && s.start_ms < to_ms && s.end_ms > s.start_ms);
    raw.sort_by(|a, b| a.start_ms.cmp(&b.start_ms).then(b.end_ms.cmp(&a.end_ms)).then(a.key.cmp(&b.key)));
    let total = raw.len();
    let mut out = RecordingList::default();
    let mut covered_to = from_ms;
    let mut i = 0;
    while i < total {
        let mut best: Option<usize> = None;
        while i < total && raw[i].start_ms <= covered_to {
            if best.is_none_or(|b| raw[i].end_ms > raw[b].end_ms) {
                best = Some(i);
            }
            i += 1;
        }
        match best {
            Some(b) if raw[b].end_ms > covered_to => {
                covered_to = raw[b].end_ms;
                out.segments.push(raw[b].clone());
                if out.segments.len() >= SEGMENTS_PER_PAGE_MAX {
                    out.truncated = true;
                    break;
                }
            }
            Some(_) => {}
            None => {
                // Nothing covers the edge: jump to the next segment's start.
                if raw[i].start_ms > covered_to + GAP_TOLERANCE_MS {
                    out.gaps.push(Gap { start_ms: covered_to, end_ms: raw[i].start_ms });
                }
                covered_to = raw[i].start_ms;
            }
        }
    }
    if !out.truncated && to_ms > covered_to + GAP_TOLERANCE_MS {
        out.gaps.push(Gap { start_ms: covered_to, end_ms: to_ms });
    }
    out.duplicates = if out.truncated { 0 } else { total - out.segments.len() };
    out
}

/// Lists `camera`'s recordings overlapping `[from_ms, to_ms)` from `store`.
pub async fn list_recordings(
    store: &dyn ObjectStore,
    prefix: &str,
    camera: &CameraId,
    from_ms: i64,
    to_ms: i64,
) -> Result<RecordingList, StoreError> {
    let mut raw = Vec::new();
    for dir in hour_prefixes(prefix, camera, from_ms - SEGMENT_LOOKBACK_MS, to_ms) {
        let mut after: Option<String> = None;
        loop {
            let page = store.list(&dir, after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for obj in &page {
                if let Some(KeyInfo { start_wall_ms, duration_ms, node, epoch, .. }) = parse_key(&obj.key) {
                    raw.push(RecordingSegment {
                        key: obj.key.clone(),
                        start_ms: start_wall_ms,
                        end_ms: start_wall_ms + i64::from(duration_ms),
                        bytes: obj.bytes,
                        node,
                        epoch,
                    });
                }
            }
            if page.len() < 1000 || raw.len() > 4 * SEGMENTS_PER_PAGE_MAX {
                break;
            }
        }
    }
    Ok(merge(raw, from_ms, to_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_ms: i64, end_ms: i64, node: NodeId) -> RecordingSegment {
        RecordingSegment { key: format!("k{start_ms}-{node}"), start_ms, end_ms, bytes: 1, node, epoch: 1 }
    }

    type Shape = (Vec<(i64, i64, NodeId)>, Vec<(i64, i64)>, usize);

    fn shape(l: &RecordingList) -> Shape {
        (
            l.segments.iter().map(|s| (s.start_ms, s.end_ms, s.node)).collect(),
            l.gaps.iter().map(|g| (g.start_ms, g.end_ms)).collect(),
            l.duplicates,
        )
    }

    #[test]
    fn contiguous_segments_have_no_gaps() {
        let l = merge(vec![seg(0, 6000, 1), seg(6000, 12000, 1), seg(12010, 18000, 1)], 0, 18000);
        assert_eq!(shape(&l), (vec![(0, 6000, 1), (6000, 12000, 1), (12010, 18000, 1)], vec![], 0));
    }

    #[test]
    fn gaps_are_listed_including_edges() {
        let l = merge(vec![seg(1000, 6000, 1), seg(9000, 12000, 1)], 0, 20000);
        assert_eq!(shape(&l).1, vec![(0, 1000), (6000, 9000), (12000, 20000)]);
    }

    #[test]
    fn duplicate_owner_segments_are_merged() {
        // Node 2 recorded the same time as node 1 during a partition.
        let l = merge(
            vec![
                seg(0, 6000, 1),
                seg(6000, 12000, 1),
                seg(6500, 11000, 2),
                seg(12000, 18000, 2),
                seg(11000, 17000, 1),
            ],
            0,
            18000,
        );
        let (segments, gaps, dups) = shape(&l);
        assert_eq!(gaps, vec![]);
        assert_eq!(dups, 2);
        assert_eq!(segments, vec![(0, 6000, 1), (6000, 12000, 1), (12000, 18000, 2)]);
    }

    #[test]
    fn short_segments_are_kept_when_they_are_the_only_recording() {
        // A 160 ms segment (a reconnect) followed by a full one: both are footage.
        let l = merge(vec![seg(0, 6000, 1), seg(6000, 6160, 1), seg(6160, 12160, 1)], 0, 12160);
        assert_eq!(shape(&l), (vec![(0, 6000, 1), (6000, 6160, 1), (6160, 12160, 1)], vec![], 0));
        // Small slew between segments is not a gap, and nothing is dropped.
        let l = merge(vec![seg(0, 6000, 1), seg(6020, 6100, 1), seg(6120, 12000, 1)], 0, 12000);
        assert_eq!(shape(&l), (vec![(0, 6000, 1), (6020, 6100, 1), (6120, 12000, 1)], vec![], 0));
    }

    #[test]
    fn out_of_range_segments_are_ignored() {
        let l = merge(vec![seg(-9000, -3000, 1), seg(0, 6000, 1), seg(30000, 36000, 1)], 0, 6000);
        assert_eq!(shape(&l), (vec![(0, 6000, 1)], vec![], 0));
    }
}
