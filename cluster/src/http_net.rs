//! Raft RPC over HTTP: the production network behind openraft's `RaftNetworkFactory`.
//!
//! Requests and responses are codec-encoded (postcard behind the format-version byte) and POSTed
//! to `http://{addr}/v1/raft/{append,vote,snapshot}` on the target's admin port, where
//! [`serve_append`], [`serve_vote`] and [`serve_snapshot`] hand them to the local Raft. Each call
//! is bounded by openraft's per-RPC deadline (`RPCOption::hard_ttl`).

use std::time::Duration;

use camrec_cluster_core::codec;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, RaftNetwork, RaftNetworkFactory};
use serde::{de::DeserializeOwned, Serialize};

use crate::types::ProdConfig;

/// Header carrying the cluster name, so a node never talks Raft with another cluster.
pub const CLUSTER_HEADER: &str = "x-camrec-cluster";

/// Factory for HTTP Raft clients; one shared connection pool.
#[derive(Clone, Debug)]
pub struct HttpNetwork {
    http: reqwest::Client,
    cluster_name: String,
}

impl HttpNetwork {
    pub fn new(cluster_name: &str) -> HttpNetwork {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client with static settings");
        HttpNetwork { http, cluster_name: cluster_name.to_string() }
    }
}

impl RaftNetworkFactory<ProdConfig> for HttpNetwork {
    type Network = HttpPeer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> HttpPeer {
        HttpPeer {
            http: self.http.clone(),
            cluster_name: self.cluster_name.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// One peer's Raft client.
#[derive(Debug)]
pub struct HttpPeer {
    http: reqwest::Client,
    cluster_name: String,
    target: u64,
    addr: String,
}

impl HttpPeer {
    async fn call<Req, Resp, E>(
        &self,
        route: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = codec::encode("raft rpc", req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let url = format!("http://{}/v1/raft/{route}", self.addr);
        let resp = self
            .http
            .post(&url)
            .header(CLUSTER_HEADER, &self.cluster_name)
            .timeout(option.hard_ttl())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let e = std::io::Error::other(format!(
                "{url}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let result: Result<Resp, RaftError<u64, E>> = codec::decode("raft rpc response", &bytes)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<ProdConfig> for HttpPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<ProdConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<ProdConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>>
    {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// Why an incoming Raft RPC body was refused (answered as HTTP 400).
#[derive(Debug, thiserror::Error)]
#[error("bad raft rpc: {0}")]
pub struct BadRpc(String);

fn decode_req<T: DeserializeOwned>(body: &[u8]) -> Result<T, BadRpc> {
    codec::decode("raft rpc", body).map_err(|e| BadRpc(e.to_string()))
}

fn encode_resp<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode("raft rpc response", value).expect("raft responses always encode")
}

/// Handles `POST /v1/raft/append`: returns the encoded `Result<AppendEntriesResponse, RaftError>`.
pub async fn serve_append(raft: &Raft<ProdConfig>, body: &[u8]) -> Result<Vec<u8>, BadRpc> {
    let req: AppendEntriesRequest<ProdConfig> = decode_req(body)?;
    Ok(encode_resp(&raft.append_entries(req).await))
}

/// Handles `POST /v1/raft/vote`.
pub async fn serve_vote(raft: &Raft<ProdConfig>, body: &[u8]) -> Result<Vec<u8>, BadRpc> {
    let req: VoteRequest<u64> = decode_req(body)?;
    Ok(encode_resp(&raft.vote(req).await))
}

/// Handles `POST /v1/raft/snapshot` (one chunk).
pub async fn serve_snapshot(raft: &Raft<ProdConfig>, body: &[u8]) -> Result<Vec<u8>, BadRpc> {
    let req: InstallSnapshotRequest<ProdConfig> = decode_req(body)?;
    Ok(encode_resp(&raft.install_snapshot(req).await))
}
