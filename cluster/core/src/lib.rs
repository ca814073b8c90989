//! Sans-IO control plane: the cluster state machine (`apply(command)`), placement and
//! rebalancing, make-before-break drain, the failure detector, the voter autopilot, and the
//! versioned codec. No clock, IO, tasks or unseeded randomness; the Raft glue in
//! `camrec-cluster` and the simulator drive it.

pub mod autopilot;
pub mod codec;
pub mod duties;
pub mod failure;
pub mod ids;
pub mod placement;
pub mod state;
