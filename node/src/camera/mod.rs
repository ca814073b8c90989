//! Camera actors: the per-node supervisor and one actor per recorded camera.

pub mod actor;
pub mod supervisor;
