//! End-to-end tests: real `camrec` processes, real RTSP servers (ours and GStreamer's) and a
//! real S3-compatible server, all on loopback. One test binary (few, heavy tests).

// End-to-end tests wait on real processes in real time; the determinism bans do not apply.
#![allow(clippy::disallowed_methods)]

mod cluster;
mod failures;
mod quota;
mod recording;
mod s3;
