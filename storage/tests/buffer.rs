//! Segment buffer tests: the seal/upload life cycle, pair checks, restart and crash recovery
//! (salvage of partial segments, checked with ffprobe/ffmpeg), and a model-based test against a
//! `BTreeMap` with reboot steps (after sled's `fuzz_model.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use camrec_cluster_core::ids::CameraId;
use camrec_node_core::fmp4::Sample;
use camrec_node_core::params::StreamParams;
use camrec_node_core::segment::{SegmentContent, SegmentMeta, SegmentStart, VideoCodec};
use camrec_node_core::testutil::{self, BuiltSegment};
use camrec_storage::buffer::fault;
use camrec_storage::{BufferStats, ErrorKind, OpenReport, OpenSegmentFile, SealedId, SegmentBuffer};
use rand::{Rng, SeedableRng};

fn cam(s: &str) -> CameraId {
    CameraId::new(s).unwrap()
}

fn meta_for(camera: &CameraId, seq: u64, data: &[u8]) -> SegmentMeta {
    SegmentMeta {
        camera: camera.clone(),
        owner: 1,
        epoch: 2,
        seq,
        start_wall_ms: 1_709_622_489_123 + seq as i64 * 4000,
        duration_ms: 4000,
        bytes: data.len() as u64,
        crc32c: crc32c::crc32c(data),
        video_codec: VideoCodec::H264,
        has_audio: false,
        video_frames: 100,
    }
}

/// The identity `meta_for` gives segment `seq`.
fn start_for(camera: &CameraId, seq: u64) -> SegmentStart {
    meta_for(camera, seq, b"").start()
}

/// Writes `data` in a few chunks and seals it.
fn write_segment(buffer: &SegmentBuffer, camera: &CameraId, seq: u64, data: &[u8]) -> SealedId {
    let mut file = buffer.begin(start_for(camera, seq)).unwrap();
    for chunk in data.chunks(7) {
        file.write(chunk).unwrap();
    }
    assert_eq!(file.bytes(), data.len() as u64);
    file.seal(meta_for(camera, seq, data)).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn write_seal_pending_verify_confirm() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
    let c = cam("lobby");
    let a = write_segment(&buffer, &c, 1, b"first segment bytes");
    let b = write_segment(&buffer, &c, 2, b"second, longer segment bytes");
    assert!(a < b);
    assert_eq!(buffer.stats(), BufferStats { pending_segments: 2, pending_bytes: 19 + 28 });
    let pending = buffer.pending().unwrap();
    assert_eq!(pending.iter().map(|(id, m)| (*id, m.seq)).collect::<Vec<_>>(), vec![(a, 1), (b, 2)]);
    assert_eq!(buffer.verify(a).unwrap(), meta_for(&c, 1, b"first segment bytes"));
    assert_eq!(std::fs::read(buffer.path_of(b).unwrap()).unwrap(), b"second, longer segment bytes");
    assert!(names(&dir.path().join("open")).is_empty());

    let a_path = buffer.path_of(a).unwrap();
    assert!(a_path.exists());
    buffer.confirm_uploaded(a).unwrap();
    assert!(!a_path.exists());
    assert_eq!(buffer.confirm_uploaded(a).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(buffer.path_of(a).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(buffer.pending().unwrap().len(), 1);
    assert_eq!(buffer.pending_page(Some(a), 10).unwrap()[0].0, b);
    assert!(buffer.pending_page(Some(b), 10).unwrap().is_empty());
    assert_eq!(buffer.stats(), BufferStats { pending_segments: 1, pending_bytes: 28 });
    buffer.confirm_uploaded(b).unwrap();
    assert_eq!(buffer.stats(), BufferStats::default());
    assert!(names(&dir.path().join("sealed")).is_empty());
}

#[test]
fn drop_pending_removes_record_then_file_and_open_bytes_track_unsealed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
    let c = cam("lobby");
    let a = write_segment(&buffer, &c, 1, b"first segment bytes");
    let b = write_segment(&buffer, &c, 2, b"second, longer segment bytes");
    assert_eq!(buffer.open_bytes(), 0, "sealed bytes are pending, not open");
    let mut open = buffer.begin(start_for(&c, 3)).unwrap();
    open.write(b"partial").unwrap();
    assert_eq!(buffer.open_bytes(), 7);

    let a_path = buffer.path_of(a).unwrap();
    assert_eq!(buffer.drop_pending(a).unwrap(), meta_for(&c, 1, b"first segment bytes"));
    assert!(!a_path.exists());
    assert_eq!(buffer.drop_pending(a).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(buffer.stats(), BufferStats { pending_segments: 1, pending_bytes: 28 });
    assert_eq!(buffer.pending().unwrap().iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![b]);
    open.abort().unwrap();
    assert_eq!(buffer.open_bytes(), 0);
    drop(buffer);
    // Durable: a reopened buffer does not bring the dropped segment back.
    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
    assert_eq!(buffer.stats(), BufferStats { pending_segments: 1, pending_bytes: 28 });
}

#[test]
fn abort_removes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
    let mut file = buffer.begin(start_for(&cam("c"), 1)).unwrap();
    file.write(b"partial").unwrap();
    assert_eq!(names(&dir.path().join("open")).len(), 1);
    file.abort().unwrap();
    assert!(names(&dir.path().join("open")).is_empty());
    assert!(buffer.pending().unwrap().is_empty());
}

#[test]
fn checksum_mismatch_at_seal_is_rejected_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
    let c = cam("c");
    let mut file = buffer.begin(start_for(&c, 1)).unwrap();
    file.write(b"what the buffer received").unwrap();
    let err = file.seal(meta_for(&c, 1, b"what the recorder emitted")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::DataLoss, "{err}");
    // Same length, different bytes.
    let mut file = buffer.begin(start_for(&c, 2)).unwrap();
    file.write(b"abcd").unwrap();
    assert_eq!(file.seal(meta_for(&c, 2, b"abce")).unwrap_err().kind, ErrorKind::DataLoss);
    assert!(buffer.pending().unwrap().is_empty());
    assert_eq!(buffer.stats(), BufferStats::default());
    assert!(names(&dir.path().join("open")).is_empty());
    assert_eq!(names(buffer.quarantine_dir()).len(), 2);
}

#[test]
fn verify_detects_a_changed_or_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
    let c = cam("c");
    let a = write_segment(&buffer, &c, 1, b"good bytes");
    let b = write_segment(&buffer, &c, 2, b"more good bytes");
    std::fs::write(buffer.path_of(a).unwrap(), b"bad! bytes").unwrap();
    assert_eq!(buffer.verify(a).unwrap_err().kind, ErrorKind::DataLoss);
    std::fs::remove_file(buffer.path_of(b).unwrap()).unwrap();
    assert_eq!(buffer.verify(b).unwrap_err().kind, ErrorKind::DataLoss);
}

#[test]
fn restart_resumes_pending_in_seal_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
        for i in 0..20u64 {
            let camera = cam(["a", "b", "c"][i as usize % 3]);
            let data = format!("segment {i} of camera {camera}").into_bytes();
            let id = write_segment(&buffer, &camera, i, &data);
            expected.push((id, meta_for(&camera, i, &data)));
        }
        buffer.confirm_uploaded(expected[3].0).unwrap();
        expected.remove(3);
    }
    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
    assert_eq!(buffer.pending().unwrap(), expected);
    assert_eq!(buffer.stats().pending_segments, 19);
    for (id, _) in &expected {
        buffer.verify(*id).unwrap();
    }
    // Ids keep increasing after a restart.
    let next = write_segment(&buffer, &cam("a"), 100, b"after restart");
    assert!(next > expected.last().unwrap().0);
}

#[test]
fn crash_leftovers_are_quarantined_and_lost_records_reported() {
    let dir = tempfile::tempdir().unwrap();
    let c = cam("c");
    let (kept, lost_id, lost_meta);
    {
        let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
        kept = write_segment(&buffer, &c, 1, b"kept");
        lost_id = write_segment(&buffer, &c, 2, b"file vanishes");
        lost_meta = buffer.verify(lost_id).unwrap();
        std::fs::remove_file(buffer.path_of(lost_id).unwrap()).unwrap();
        // A crash mid-segment: the open file is dropped without seal or abort.
        let mut open = buffer.begin(start_for(&c, 3)).unwrap();
        open.write(b"half a segm").unwrap();
        drop(open);
    }
    // An orphan sealed file: a crash between confirm_uploaded's record removal and file delete.
    std::fs::write(dir.path().join("sealed").join("00000000000000000999-c.mp4"), b"orphan").unwrap();

    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(
        report,
        OpenReport {
            parts_quarantined: 1,
            orphans_quarantined: 1,
            lost_segments: 1,
            lost: vec![(lost_id, lost_meta)],
            ..OpenReport::default()
        }
    );
    assert_eq!(buffer.pending().unwrap().iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![kept]);
    assert_eq!(buffer.stats(), BufferStats { pending_segments: 1, pending_bytes: 4 });
    let quarantined = names(buffer.quarantine_dir());
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(quarantined.iter().any(|n| n.ends_with(".part")));
    assert!(quarantined.contains(&"00000000000000000999-c.mp4".to_owned()));
    assert!(names(&dir.path().join("open")).is_empty());
    drop(buffer);
    // Recovery is idempotent.
    let (_, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
}

/// Writes `bytes` to a new `.part` for `start` in chunks of about one write per frame, then
/// "crashes" (drops the file without seal or abort, as kill -9 would).
fn crash_mid_segment(dir: &Path, start: SegmentStart, bytes: &[u8]) {
    let (buffer, _) = SegmentBuffer::open(dir).unwrap();
    let mut file = buffer.begin(start).unwrap();
    for chunk in bytes.chunks(1500) {
        file.write(chunk).unwrap();
    }
    drop(file);
}

fn h264_aac_start(camera: &CameraId, seq: u64) -> SegmentStart {
    SegmentStart { has_audio: true, ..start_for(camera, seq) }
}

/// kill -9 mid-segment: the complete fragments of a real H.264+AAC segment come back as one
/// sealed, pending segment that ffprobe/ffmpeg read without a message; a torn last fragment is
/// cut off. Cut points: exactly at a fragment end, one byte short of it, inside the next moof
/// header, and the whole file (crash before the seal).
#[test]
fn crash_mid_segment_salvages_complete_fragments() {
    let media_dir = tempfile::tempdir().unwrap();
    let (_, segment) = testutil::encoded_segment(media_dir.path(), VideoCodec::H264, 4);
    let ends: Vec<usize> = segment.fragments.iter().map(|f| f.end_bytes).collect();
    let c = cam("lobby");
    for (cut, fragments_kept) in [(ends[0], 1), (ends[2] - 1, 2), (ends[2] + 5, 3), (ends[3], 4)] {
        let dir = tempfile::tempdir().unwrap();
        let start = h264_aac_start(&c, 7);
        crash_mid_segment(dir.path(), start.clone(), &segment.bytes[..cut]);

        let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
        let kept = segment.fragments[fragments_kept - 1];
        let frame_ms = 40;
        let expected_ms = kept.video_frames as i64 * frame_ms;
        assert_eq!(
            (
                report.parts_salvaged,
                report.parts_quarantined,
                report.orphans_quarantined,
                report.lost_segments
            ),
            (1, 0, 0, 0),
            "cut at {cut}: {report:?}"
        );
        assert!((report.salvaged_ms as i64 - expected_ms).abs() <= frame_ms, "{report:?}");
        let pending = buffer.pending().unwrap();
        let [(id, meta)] = pending.as_slice() else { panic!("cut at {cut}: pending {pending:?}") };
        let prefix = &segment.bytes[..kept.end_bytes];
        assert_eq!(meta.start(), start);
        assert_eq!((meta.bytes, meta.crc32c), (prefix.len() as u64, crc32c::crc32c(prefix)), "cut at {cut}");
        assert_eq!(meta.video_frames, kept.video_frames);
        assert!((i64::from(meta.duration_ms) - expected_ms).abs() <= frame_ms, "{meta:?}");
        assert_eq!(buffer.verify(*id).unwrap(), *meta);
        assert_eq!(buffer.stats(), BufferStats { pending_segments: 1, pending_bytes: meta.bytes });
        let path = buffer.path_of(*id).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), prefix);
        let probed_ms = testutil::validate_with_ffmpeg(&path);
        assert!(
            (probed_ms - meta.duration_ms as f64).abs() <= frame_ms as f64,
            "ffprobe {probed_ms} ms, {meta:?}"
        );
        assert_eq!(testutil::ffprobe_video_frames(&path), u64::from(kept.video_frames));
        assert!(names(&dir.path().join("open")).is_empty());
        assert!(names(buffer.quarantine_dir()).is_empty());
        drop(buffer);

        // Recovery is idempotent; the salvaged segment stays pending.
        let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
        assert_eq!(report, OpenReport::default());
        assert_eq!(buffer.pending().unwrap(), pending);
    }
}

/// Leftovers that cannot be sealed are quarantined untouched: only ftyp+moov, a first fragment
/// torn, a `.part` without an `open` record (a crash between an older version's create and
/// record, or a stray file), and a file whose init segment contradicts its record.
#[test]
fn unsalvageable_parts_are_quarantined() {
    let media = fake_media_segment();
    let c = cam("c");
    let first_end = media.fragments[0].end_bytes;
    let cases: [(&str, SegmentStart, &[u8]); 3] = [
        ("init only", start_for(&c, 1), &media.bytes[..media.init_bytes]),
        ("torn first fragment", start_for(&c, 2), &media.bytes[..first_end - 1]),
        ("record says audio, file has none", h264_aac_start(&c, 3), &media.bytes),
    ];
    for (what, start, bytes) in cases {
        let dir = tempfile::tempdir().unwrap();
        crash_mid_segment(dir.path(), start, bytes);
        let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
        assert_eq!((report.parts_salvaged, report.parts_quarantined), (0, 1), "{what}: {report:?}");
        assert!(buffer.pending().unwrap().is_empty(), "{what}");
        let quarantined = names(buffer.quarantine_dir());
        assert_eq!(quarantined.len(), 1, "{what}");
        assert_eq!(std::fs::read(buffer.quarantine_dir().join(&quarantined[0])).unwrap(), bytes, "{what}");
    }

    let dir = tempfile::tempdir().unwrap();
    drop(SegmentBuffer::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("open").join("c-00000000000000000042.part"), &media.bytes).unwrap();
    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!((report.parts_salvaged, report.parts_quarantined), (0, 1), "no record: {report:?}");
    assert_eq!(names(buffer.quarantine_dir()), vec!["c-00000000000000000042.part".to_owned()]);
}

/// `seal` and `abort` remove the `open` record: after a reboot nothing is salvaged twice, and a
/// later leftover with the same content is still salvaged from its own record.
#[test]
fn seal_and_abort_leave_nothing_to_salvage() {
    let media = fake_media_segment();
    let dir = tempfile::tempdir().unwrap();
    let c = cam("c");
    {
        let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
        let mut sealed = buffer.begin(start_for(&c, 1)).unwrap();
        sealed.write(&media.bytes).unwrap();
        let meta = expected_salvage(&start_for(&c, 1), &media, media.bytes.len()).unwrap();
        sealed.seal(meta).unwrap();
        let mut aborted = buffer.begin(start_for(&c, 2)).unwrap();
        aborted.write(&media.bytes).unwrap();
        aborted.abort().unwrap();
        let mut crashed = buffer.begin(start_for(&c, 3)).unwrap();
        crashed.write(&media.bytes).unwrap();
    }
    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!((report.parts_salvaged, report.parts_quarantined), (1, 0), "{report:?}");
    assert_eq!(buffer.pending().unwrap().iter().map(|(_, m)| m.seq).collect::<Vec<_>>(), vec![1, 3]);
    drop(buffer);
    let (_, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
}

/// Writes `data` as segment `seq` of `camera` and seals it with `meta`, "crashing" (the fault
/// hook) right after the rename into `sealed/`, before the index record is inserted: a kill -9
/// inside `seal` between the directory fsync and the sled flush.
fn seal_crashing_after_rename(buffer: &SegmentBuffer, start: SegmentStart, data: &[u8], meta: SegmentMeta) {
    let mut file = buffer.begin(start).unwrap();
    for chunk in data.chunks(100) {
        file.write(chunk).unwrap();
    }
    fault::crash_next_seal_after_rename();
    let err = file.seal(meta).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
}

/// kill -9 inside `seal` after the rename into `sealed/` but before the index flush: the
/// complete sealed file is re-indexed from its `open` record at the next `open` (pending
/// exactly once, with the metadata `seal` was given), not quarantined; a complete file passes
/// `verify` untouched, and one with bytes after its last complete fragment is cut to them.
#[test]
fn seal_crash_after_rename_is_reindexed() {
    let media = fake_media_segment();
    let c = cam("b-2");
    let dir = tempfile::tempdir().unwrap();
    let mut with_junk = media.bytes.clone();
    with_junk.extend_from_slice(b"\0\0\0\x10moof torn");
    let (kept, kept_meta, meta_2, meta_3);
    {
        let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
        kept_meta = expected_salvage(&start_for(&c, 1), &media, media.bytes.len()).unwrap();
        let mut file = buffer.begin(start_for(&c, 1)).unwrap();
        file.write(&media.bytes).unwrap();
        kept = file.seal(kept_meta.clone()).unwrap();

        meta_2 = expected_salvage(&start_for(&c, 2), &media, media.bytes.len()).unwrap();
        seal_crashing_after_rename(&buffer, start_for(&c, 2), &media.bytes, meta_2.clone());
        // The recorder checksummed what it emitted, junk included; recovery keeps the segment.
        seal_crashing_after_rename(&buffer, start_for(&c, 3), &with_junk, meta_for(&c, 3, &with_junk));
        meta_3 = expected_salvage(&start_for(&c, 3), &media, with_junk.len()).unwrap();

        assert_eq!(buffer.pending().unwrap(), vec![(kept, kept_meta.clone())]);
        assert!(names(&dir.path().join("open")).is_empty());
        assert_eq!(names(&dir.path().join("sealed")).len(), 3);
    }

    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport { orphans_reindexed: 2, ..OpenReport::default() });
    let pending = buffer.pending().unwrap();
    assert_eq!(pending.len(), 3, "{pending:?}");
    assert_eq!(pending[0], (kept, kept_meta));
    assert!(pending[1].0 > kept && pending[2].0 > pending[1].0);
    let mut reindexed: Vec<SegmentMeta> = pending[1..].iter().map(|(_, m)| m.clone()).collect();
    reindexed.sort_by_key(|m| m.seq);
    assert_eq!(reindexed, vec![meta_2.clone(), meta_3.clone()]);
    for (id, meta) in &pending {
        assert_eq!(&buffer.verify(*id).unwrap(), meta);
        assert_eq!(std::fs::read(buffer.path_of(*id).unwrap()).unwrap(), media.bytes, "{meta:?}");
    }
    assert_eq!(
        buffer.stats(),
        BufferStats { pending_segments: 3, pending_bytes: 3 * media.bytes.len() as u64 }
    );
    assert!(names(buffer.quarantine_dir()).is_empty());
    assert_eq!(names(&dir.path().join("sealed")).len(), 3);
    drop(buffer);

    // Idempotent: nothing is re-indexed twice (the open records are gone).
    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
    assert_eq!(buffer.pending().unwrap(), pending);
    for (id, _) in &pending {
        buffer.confirm_uploaded(*id).unwrap();
    }
    assert!(names(&dir.path().join("sealed")).is_empty());
    drop(buffer);
    let (_, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
}

/// The same crash point inside `open`'s salvage of a `.part` (which seals through the same
/// steps): the first `open` dies after the rename, the next one re-indexes the truncated prefix.
#[test]
fn salvage_crash_after_rename_is_reindexed() {
    let media = fake_media_segment();
    let c = cam("c");
    let dir = tempfile::tempdir().unwrap();
    let cut = media.fragments[1].end_bytes + 3;
    crash_mid_segment(dir.path(), start_for(&c, 5), &media.bytes[..cut]);
    fault::crash_next_seal_after_rename();
    assert_eq!(SegmentBuffer::open(dir.path()).unwrap_err().kind, ErrorKind::Fatal);
    assert!(names(&dir.path().join("open")).is_empty());
    assert_eq!(names(&dir.path().join("sealed")).len(), 1);

    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport { orphans_reindexed: 1, ..OpenReport::default() });
    let expected = expected_salvage(&start_for(&c, 5), &media, cut).unwrap();
    let pending = buffer.pending().unwrap();
    let [(id, meta)] = pending.as_slice() else { panic!("pending {pending:?}") };
    assert_eq!(*meta, expected);
    assert_eq!(buffer.verify(*id).unwrap(), expected);
    let prefix = &media.bytes[..media.fragments[1].end_bytes];
    assert_eq!(std::fs::read(buffer.path_of(*id).unwrap()).unwrap(), prefix);
    assert!(names(buffer.quarantine_dir()).is_empty());
    drop(buffer);
    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
    assert_eq!(buffer.pending().unwrap(), pending);
}

/// Sealed files without an index record that are not re-indexed: after a crash inside
/// `confirm_uploaded` (record removed, file not yet deleted) there is no `open` record, so the
/// file is quarantined and nothing is lost; a file whose seal crashed after the rename but
/// that is not a segment (it cannot be described) is quarantined and counted as lost.
#[test]
fn orphans_without_open_record_or_unreadable_are_quarantined() {
    let media = fake_media_segment();
    let c = cam("c");
    let dir = tempfile::tempdir().unwrap();
    let (uploaded_name, uploaded_bytes);
    {
        let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
        let meta = expected_salvage(&start_for(&c, 1), &media, media.bytes.len()).unwrap();
        let mut file = buffer.begin(start_for(&c, 1)).unwrap();
        file.write(&media.bytes).unwrap();
        let id = file.seal(meta).unwrap();
        let path = buffer.path_of(id).unwrap();
        uploaded_name = path.file_name().unwrap().to_string_lossy().into_owned();
        uploaded_bytes = std::fs::read(&path).unwrap();
        buffer.confirm_uploaded(id).unwrap();
        // The crash came before the delete.
        std::fs::write(&path, &uploaded_bytes).unwrap();

        seal_crashing_after_rename(
            &buffer,
            start_for(&c, 2),
            b"not a segment",
            meta_for(&c, 2, b"not a segment"),
        );
    }
    let (buffer, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport { orphans_quarantined: 2, lost_segments: 1, ..OpenReport::default() });
    assert!(buffer.pending().unwrap().is_empty());
    assert!(names(&dir.path().join("sealed")).is_empty());
    let quarantined = names(buffer.quarantine_dir());
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(quarantined.contains(&uploaded_name));
    assert_eq!(std::fs::read(buffer.quarantine_dir().join(&uploaded_name)).unwrap(), uploaded_bytes);
    drop(buffer);
    let (_, report) = SegmentBuffer::open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
}

/// A small segment from the real writer with fake (length-prefixed) H.264 samples and no audio,
/// matching [`start_for`]: 12 frames in fragments of 3.
fn fake_media_segment() -> BuiltSegment {
    let params = StreamParams { video: testutil::fake_h264_params(), audio: None };
    let video: Vec<Sample> = (0..12u32)
        .map(|i| {
            let mut data = (10 + 7 * i).to_be_bytes().to_vec();
            data.extend(std::iter::repeat_n(i as u8 + 1, 10 + 7 * i as usize));
            Sample { duration_ticks: 3600, is_sync: i % 6 == 0, data: Bytes::from(data) }
        })
        .collect();
    testutil::build_segment(&params, &video, &[], 3, 0)
}

/// What recovery must seal for a `.part` of `start` holding `written` bytes of `segment`.
fn expected_salvage(start: &SegmentStart, segment: &BuiltSegment, written: usize) -> Option<SegmentMeta> {
    let last = segment.fragments.iter().take_while(|f| f.end_bytes <= written).last()?;
    let prefix = &segment.bytes[..last.end_bytes];
    Some(start.seal(SegmentContent {
        video_duration_90k: last.video_duration_90k,
        bytes: prefix.len() as u64,
        crc32c: crc32c::crc32c(prefix),
        video_frames: last.video_frames,
    }))
}

/// Random begin/write/seal/abort/confirm/reopen steps against a model: the sealed-and-not-
/// confirmed segments in seal order, and the set of files being written. Some files receive a
/// real segment (in random chunks), so a reboot salvages their complete fragments. Some seals
/// crash after their rename (then the process reboots): the reboot re-indexes those holding a
/// complete fragment and quarantines (and counts as lost) the rest.
#[test]
fn model_based_random_operations() {
    let (salvaged, reindexed) =
        (0..8u64).map(|seed| run_model(seed, 300)).fold((0, 0), |(s, r), (s1, r1)| (s + s1, r + r1));
    assert!(salvaged >= 10, "the model salvaged only {salvaged} parts");
    assert!(reindexed >= 3, "the model re-indexed only {reindexed} sealed files");
}

/// Returns how many partial segments reboots salvaged, and how many sealed files they
/// re-indexed.
fn run_model(seed: u64, steps: usize) -> (u64, u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let cameras = [cam("a"), cam("b-2"), cam("c.3")];
    let (mut buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
    let mut model: BTreeMap<SealedId, SegmentMeta> = BTreeMap::new();
    let media = fake_media_segment();
    // Open files with the bytes written so far, and whether they receive `media`.
    let mut open: Vec<(OpenSegmentFile, Vec<u8>, bool)> = Vec::new();
    let mut seq = 0u64;
    let mut quarantined_expected = 0usize;
    let mut salvaged_total = 0u64;
    let mut reindexed_total = 0u64;
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        let mut reboot = false;
        // A seal that crashed after its rename: what re-indexing must produce (`None`: the
        // file is not a segment, so it is quarantined).
        let mut crashed_seal: Option<Option<SegmentMeta>> = None;
        match rng.gen_range(0..100) {
            0..=19 if open.len() < 4 => {
                seq += 1;
                let camera = &cameras[rng.gen_range(0..cameras.len())];
                open.push((buffer.begin(start_for(camera, seq)).unwrap(), Vec::new(), rng.gen_bool(0.5)));
            }
            0..=44 if !open.is_empty() => {
                let i = rng.gen_range(0..open.len());
                let len = rng.gen_range(0..300);
                let chunk: Vec<u8> = if open[i].2 {
                    // Larger steps: a segment is ~1.9 KB, fragments end at 896, 1154, 1475, 1859.
                    let len = len * 5;
                    let from = open[i].1.len();
                    media.bytes[from..(from + len).min(media.bytes.len())].to_vec()
                } else {
                    (0..len).map(|_| rng.gen()).collect()
                };
                open[i].0.write(&chunk).unwrap();
                open[i].1.extend_from_slice(&chunk);
            }
            45..=64 if !open.is_empty() => {
                let (file, data, is_media) = open.remove(rng.gen_range(0..open.len()));
                let meta = meta_for(&file.camera().clone(), file.seq(), &data);
                if rng.gen_bool(0.2) {
                    let expected =
                        if is_media { expected_salvage(file.start(), &media, data.len()) } else { None };
                    fault::crash_next_seal_after_rename();
                    assert_eq!(file.seal(meta).unwrap_err().kind, ErrorKind::Fatal, "{ctx}");
                    crashed_seal = Some(expected);
                    reboot = true;
                } else if rng.gen_bool(0.1) {
                    let mut bad = meta.clone();
                    bad.crc32c ^= 1;
                    assert_eq!(file.seal(bad).unwrap_err().kind, ErrorKind::DataLoss, "{ctx}");
                    quarantined_expected += 1;
                } else {
                    let id = file.seal(meta.clone()).unwrap();
                    assert!(
                        model.keys().next_back().is_none_or(|last| *last < id),
                        "{ctx}: ids not increasing"
                    );
                    model.insert(id, meta);
                }
            }
            65..=69 if !open.is_empty() => {
                let (file, _, _) = open.remove(rng.gen_range(0..open.len()));
                file.abort().unwrap();
            }
            70..=89 if !model.is_empty() => {
                let id = *model.keys().nth(rng.gen_range(0..model.len())).unwrap();
                buffer.verify(id).unwrap();
                buffer.confirm_uploaded(id).unwrap();
                model.remove(&id);
            }
            90..=94 => reboot = true,
            _ => {}
        }
        if reboot {
            // Reboot: open files die with the process; those holding a complete fragment
            // come back sealed, the rest are quarantined.
            let crashed = open.len();
            let mut salvaged: Vec<SegmentMeta> = std::mem::take(&mut open)
                .into_iter()
                .filter(|(_, _, is_media)| *is_media)
                .filter_map(|(file, data, _)| expected_salvage(file.start(), &media, data.len()))
                .collect();
            salvaged.sort_by_key(|m| m.seq);
            drop(buffer);
            let (reopened, report) = SegmentBuffer::open(dir.path()).unwrap();
            buffer = reopened;
            assert_eq!(report.parts_salvaged, salvaged.len() as u64, "{ctx}");
            assert_eq!(
                report.salvaged_ms,
                salvaged.iter().map(|m| u64::from(m.duration_ms)).sum::<u64>(),
                "{ctx}"
            );
            assert_eq!(report.parts_quarantined, (crashed - salvaged.len()) as u64, "{ctx}");
            let (reindexed, lost) = match crashed_seal {
                Some(Some(meta)) => {
                    salvaged.push(meta);
                    salvaged.sort_by_key(|m| m.seq);
                    (1, 0)
                }
                Some(None) => (0, 1),
                None => (0, 0),
            };
            assert_eq!(
                (report.orphans_reindexed, report.orphans_quarantined, report.lost_segments),
                (reindexed, lost, lost),
                "{ctx}: {report:?}"
            );
            quarantined_expected += crashed - (salvaged.len() - reindexed as usize) + lost as usize;
            salvaged_total += report.parts_salvaged;
            reindexed_total += reindexed;
            let mut new: Vec<(SealedId, SegmentMeta)> =
                buffer.pending().unwrap().into_iter().filter(|(id, _)| !model.contains_key(id)).collect();
            assert!(new.iter().all(|(id, _)| model.keys().next_back().is_none_or(|last| last < id)), "{ctx}");
            new.sort_by_key(|(_, m)| m.seq);
            assert_eq!(new.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(), salvaged, "{ctx}");
            model.extend(new);
        }
        let pending = buffer.pending().unwrap();
        let expected: Vec<(SealedId, SegmentMeta)> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(pending, expected, "{ctx}");
        assert_eq!(
            buffer.stats(),
            BufferStats {
                pending_segments: model.len() as u64,
                pending_bytes: model.values().map(|m| m.bytes).sum()
            },
            "{ctx}"
        );
        assert_eq!(names(&dir.path().join("sealed")).len(), model.len(), "{ctx}");
        assert_eq!(names(&dir.path().join("open")).len(), open.len(), "{ctx}");
        assert_eq!(names(buffer.quarantine_dir()).len(), quarantined_expected, "{ctx}");
    }
    for id in model.keys() {
        assert_eq!(&buffer.verify(*id).unwrap(), model.get(id).unwrap());
    }
    (salvaged_total, reindexed_total)
}

/// Reopening right after a drop waits for sled's flusher to release the index lock instead of
/// failing (the model test once hit this; a restart right after a crash can too).
#[test]
fn reopen_right_after_drop_waits_for_the_index_lock() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
        drop(buffer);
    }
}
