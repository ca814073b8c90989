//! Sans-IO control plane: the cluster state machine (`apply(command)`), placement, failure
//! detection and drain planning, and the versioned codec. No clock, IO, tasks or unseeded
//! randomness; the Raft glue in `camrec-cluster` and the simulator drive it.

pub mod codec;
pub mod ids;
pub mod placement;
pub mod state;
