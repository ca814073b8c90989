//! Sans-IO per-camera logic. Nothing here reads a clock, touches a file or socket, spawns a task
//! or draws unseeded randomness: shells pass `now` and a seeded RNG in, and execute the outputs.
//! The same code runs under the real node and under the deterministic simulator.
//!
//! - [`recorder`]: per-camera recorder + segmenter (`handle(now, input)` / `poll_output()`).
//! - [`fmp4`]: the fragmented-MP4 writer the recorder uses.
//! - [`backoff`]: exponential backoff with full jitter.
//! - [`upload`]: which sealed segments to upload next, with retries.
//! - [`quota`]: the buffer's disk quota: which pending segments to drop, when to pause.

pub mod backoff;
pub mod clock;
pub mod fmp4;
pub mod params;
pub mod quota;
pub mod recorder;
pub mod segment;
pub mod state;
pub mod upload;

/// Test helpers (real encoded media, ffmpeg validation); see the module doc.
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
