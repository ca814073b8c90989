//! openraft glue for camrec: the type configuration (generic over the async runtime), the state
//! machine adapter over the sans-IO [`camrec_cluster_core::state::ClusterState`], the Raft
//! network trait implementations, and [`node::ClusterNode`], a running member.

pub mod http_net;
pub mod network;
pub mod node;
pub mod sm;
pub mod types;
