//! camrec's deterministic simulator: the production cluster logic (cluster core, state machine,
//! failure detector, placement, voter autopilot) and the real openraft, on one current-thread
//! tokio runtime with paused (virtual) time and seeded randomness, over a simulated network and
//! simulated disks. Same seed + same binary → the same trace, byte for byte.
//!
//! Determinism rules kept here: one runtime thread; every random draw from a ChaCha stream
//! derived from the seed (tokio's own via `rng_seed`, openraft's via [`sim_rt`]); BTreeMap and
//! BTreeSet only; `biased;` in every `select!`; no wall-clock reads in the simulated path.

pub mod net;
pub mod scenario;
pub mod sim_rt;
pub mod store;
pub mod trace;
pub mod world;
