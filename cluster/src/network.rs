//! The Raft network behind openraft's `RaftNetworkFactory`.
//!
//! A single-node cluster never sends an RPC; [`NoPeers`] is the network for it and answers
//! `Unreachable` if openraft ever tries (which it only does once a second voter exists). The
//! multi-node HTTP transport plugs in behind the same trait.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory, RaftTypeConfig};

/// Network for a cluster of one: every RPC is unreachable.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeers;

fn unreachable<E: std::error::Error>(target: u64) -> RPCError<u64, BasicNode, E> {
    let e = std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("node {target}: this node runs without a peer network (single-node mode)"),
    );
    RPCError::Unreachable(Unreachable::new(&e))
}

impl<C> RaftNetworkFactory<C> for NoPeers
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
{
    type Network = NoPeersClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        NoPeersClient { target }
    }
}

#[derive(Debug)]
pub struct NoPeersClient {
    target: u64,
}

impl<C> RaftNetwork<C> for NoPeersClient
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
{
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable(self.target))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>>
    {
        Err(unreachable(self.target))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable(self.target))
    }
}
