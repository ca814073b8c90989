//! Sans-IO per-camera logic. Nothing here reads a clock, touches a file or socket, spawns a task
//! or draws unseeded randomness: shells pass `now` and a seeded RNG in, and execute the outputs.
//! The same code runs under the real node and under the deterministic simulator.

pub mod segment;
