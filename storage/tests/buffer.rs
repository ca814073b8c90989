//! Segment buffer tests: the seal/upload life cycle, pair checks, restart and crash recovery,
//! and a model-based test against a `BTreeMap` with reboot steps (after sled's
//! `fuzz_model.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use camrec_cluster_core::ids::CameraId;
use camrec_node_core::segment::{SegmentMeta, VideoCodec};
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

/// Writes `data` in a few chunks and seals it.
fn write_segment(buffer: &SegmentBuffer, camera: &CameraId, seq: u64, data: &[u8]) -> SealedId {
    let mut file = buffer.begin(camera, seq).unwrap();
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

    buffer.confirm_uploaded(a).unwrap();
    assert!(!buffer.path_of(b).unwrap().with_file_name(format!("{:020}-lobby.mp4", a.0)).exists());
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
fn abort_removes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
    let mut file = buffer.begin(&cam("c"), 1).unwrap();
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
    let mut file = buffer.begin(&c, 1).unwrap();
    file.write(b"what the buffer received").unwrap();
    let err = file.seal(meta_for(&c, 1, b"what the recorder emitted")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::DataLoss, "{err}");
    // Same length, different bytes.
    let mut file = buffer.begin(&c, 2).unwrap();
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
        let mut open = buffer.begin(&c, 3).unwrap();
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
            lost: vec![(lost_id, lost_meta)]
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

/// Random begin/write/seal/abort/confirm/reopen steps against a model: the sealed-and-not-
/// confirmed segments in seal order, and the set of files being written.
#[test]
fn model_based_random_operations() {
    for seed in 0..8u64 {
        run_model(seed, 300);
    }
}

fn run_model(seed: u64, steps: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let cameras = [cam("a"), cam("b-2"), cam("c.3")];
    let (mut buffer, _) = SegmentBuffer::open(dir.path()).unwrap();
    let mut model: BTreeMap<SealedId, SegmentMeta> = BTreeMap::new();
    // Open files with the bytes written so far.
    let mut open: Vec<(OpenSegmentFile, Vec<u8>)> = Vec::new();
    let mut seq = 0u64;
    let mut quarantined_expected = 0usize;
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        match rng.gen_range(0..100) {
            0..=19 if open.len() < 4 => {
                seq += 1;
                let camera = &cameras[rng.gen_range(0..cameras.len())];
                open.push((buffer.begin(camera, seq).unwrap(), Vec::new()));
            }
            0..=44 if !open.is_empty() => {
                let i = rng.gen_range(0..open.len());
                let len = rng.gen_range(0..300);
                let chunk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                open[i].0.write(&chunk).unwrap();
                open[i].1.extend_from_slice(&chunk);
            }
            45..=64 if !open.is_empty() => {
                let (file, data) = open.remove(rng.gen_range(0..open.len()));
                let meta = meta_for(&file.camera().clone(), file.seq(), &data);
                if rng.gen_bool(0.1) {
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
                let (file, _) = open.remove(rng.gen_range(0..open.len()));
                file.abort().unwrap();
            }
            70..=89 if !model.is_empty() => {
                let id = *model.keys().nth(rng.gen_range(0..model.len())).unwrap();
                buffer.verify(id).unwrap();
                buffer.confirm_uploaded(id).unwrap();
                model.remove(&id);
            }
            90..=94 => {
                // Reboot: open files die with the process.
                let crashed = open.len();
                open.clear();
                drop(buffer);
                let (reopened, report) = SegmentBuffer::open(dir.path()).unwrap();
                buffer = reopened;
                assert_eq!(report.parts_quarantined, crashed as u64, "{ctx}");
                assert_eq!((report.orphans_quarantined, report.lost_segments), (0, 0), "{ctx}");
                quarantined_expected += crashed;
            }
            _ => {}
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
}
