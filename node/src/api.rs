//! The admin API (actix-web): cameras CRUD with live state, recordings, cluster and node views,
//! health, readiness and Prometheus metrics. Handlers translate HTTP into cluster commands and
//! queries; they decide nothing about the cluster. Errors are JSON `{error: {code, message}}`;
//! bad input is always a 4xx, never a 5xx.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use camrec_cluster::http_net;
use camrec_cluster::node::ClusterNode;
use camrec_cluster_core::codec;
use camrec_cluster_core::ids::{CameraId, NodeId};
use camrec_cluster_core::state::{
    CameraPatch, CameraRecord, CameraSpec, Command, CommandError, Transport, BITRATE_KBPS_DEFAULT,
};
use camrec_node_core::state::CameraState;
use camrec_storage::recordings::list_recordings;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::control::{Control, Heartbeat, JoinRequest, ProposeAnswer, ProposeFailure};
use crate::node_ctx::NodeCtx;

/// Largest JSON body accepted (a bulk import of ~10k cameras).
pub const JSON_BODY_BYTES_MAX: usize = 4 << 20;
/// Largest Raft RPC / forwarded proposal body (a bulk registration entry, a snapshot chunk).
pub const RPC_BODY_BYTES_MAX: usize = 256 << 20;
/// Bound on heartbeats queued for the leader's failure detector.
pub const HEARTBEATS_QUEUED_MAX: usize = 4096;

pub struct ApiState {
    pub ctx: Arc<NodeCtx>,
    pub cluster: Arc<ClusterNode>,
    pub control: Control,
    pub metrics: Option<PrometheusHandle>,
    /// The buffer's disk quota (`storage.buffer_quota_bytes`; `None` = unlimited).
    pub buffer_quota_bytes: Option<u64>,
    /// Heartbeats received (when leader) for the failure detector.
    pub heartbeats: tokio::sync::mpsc::Sender<NodeId>,
}

/// An API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, code: "bad_request", message: message.into() }
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into() }
    }
    fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, code: "unavailable", message: message.into() }
    }
    fn internal(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message: message.into() }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}
#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    retryable: bool,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.insert_header(("Retry-After", "1"));
        }
        resp.json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                retryable: self.status == StatusCode::SERVICE_UNAVAILABLE,
            },
        })
    }
}

fn command_error(e: CommandError) -> ApiError {
    match e {
        CommandError::CameraNotFound(_) | CommandError::NodeNotFound(_) => ApiError::not_found(e.to_string()),
        CommandError::CameraExists(_) => {
            ApiError { status: StatusCode::CONFLICT, code: "conflict", message: e.to_string() }
        }
        CommandError::Invalid(_) => ApiError::bad_request(e.to_string()),
        CommandError::Stale(_)
        | CommandError::NodeStatusConflict { .. }
        | CommandError::NodeNotEmpty { .. } => {
            ApiError { status: StatusCode::CONFLICT, code: "conflict", message: e.to_string() }
        }
    }
}

/// Proposes a command through Raft (forwarded to the leader when needed) and maps every failure
/// to a clear API error: no leader within the deadline is a retryable 503, never a silent loss.
async fn write(state: &ApiState, cmd: Command) -> Result<camrec_cluster_core::state::Response, ApiError> {
    let r = state.control.propose(cmd).await.map_err(|e| match e {
        ProposeFailure::Unavailable(m) => ApiError::unavailable(m),
        ProposeFailure::Fatal(m) => ApiError::internal(m),
    })?;
    let r = r.response;
    match r.result.clone() {
        Some(err) => Err(command_error(err)),
        None => Ok(r),
    }
}

// ------------------------------------------------------------------ cameras

/// Body of `POST /v1/cameras`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraCreate {
    pub id: String,
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub enabled: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub bitrate_kbps: Option<u32>,
    pub transport: Option<Transport>,
}

impl CameraCreate {
    pub fn into_spec(self) -> Result<CameraSpec, ApiError> {
        let id = CameraId::new(self.id).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let url = parse_camera_url(&self.url)?;
        Ok(CameraSpec {
            id,
            url,
            username: self.username,
            password: self.password,
            transport: self.transport.unwrap_or_default(),
            enabled: self.enabled.unwrap_or(true),
            labels: self.labels.unwrap_or_default(),
            bitrate_kbps: self.bitrate_kbps.unwrap_or(BITRATE_KBPS_DEFAULT),
        })
    }
}

/// Validates an RTSP URL; credentials belong in username/password, not the URL (they would be
/// returned by the API and logged).
fn parse_camera_url(raw: &str) -> Result<String, ApiError> {
    let url = url::Url::parse(raw).map_err(|e| ApiError::bad_request(format!("url: {e}")))?;
    if !matches!(url.scheme(), "rtsp" | "rtsps") {
        return Err(ApiError::bad_request("url: scheme must be rtsp:// or rtsps://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("url: missing host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::bad_request(
            "url: put credentials in the username/password fields, not in the URL",
        ));
    }
    Ok(url.to_string())
}

/// Body of `PATCH /v1/cameras/{id}`: absent fields stay; `null` clears username/password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraUpdate {
    pub url: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub username: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub password: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub bitrate_kbps: Option<u32>,
    pub transport: Option<Transport>,
}

fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A camera as the API shows it. No password, ever.
#[derive(Debug, Serialize)]
pub struct CameraView {
    pub id: CameraId,
    pub url: String,
    pub username: Option<String>,
    pub has_password: bool,
    pub transport: Transport,
    pub enabled: bool,
    pub labels: BTreeMap<String, String>,
    pub bitrate_kbps: u32,
    pub owner: Option<NodeId>,
    pub epoch: Option<u64>,
    /// Live state: from this node when it records the camera; `disabled`; `unassigned`; or
    /// `remote` when another node records it.
    pub state: serde_json::Value,
}

/// Live statuses of other nodes' cameras, fetched from their owners.
type RemoteStatuses = BTreeMap<NodeId, BTreeMap<CameraId, serde_json::Value>>;

/// How long a camera query waits for another node's live statuses.
const REMOTE_STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// Fetches `/v1/internal/status` from each of `nodes` (not this one) concurrently; a node that
/// does not answer in time is simply missing (its cameras show `unknown`).
async fn remote_statuses(state: &ApiState, nodes: BTreeSet<NodeId>) -> RemoteStatuses {
    let http = reqwest::Client::new();
    let mut calls = Vec::new();
    for node in nodes {
        if node == state.ctx.node_id {
            continue;
        }
        let Some(addr) = state.control.addr_of(node) else { continue };
        let http = http.clone();
        calls.push(async move {
            let r = http
                .get(format!("http://{addr}/v1/internal/status"))
                .timeout(REMOTE_STATUS_TIMEOUT)
                .send()
                .await;
            let v = match r {
                Ok(r) => r.json::<BTreeMap<CameraId, serde_json::Value>>().await.ok(),
                Err(_) => None,
            };
            (node, v)
        });
    }
    futures::future::join_all(calls).await.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))).collect()
}

fn view(state: &ApiState, record: &CameraRecord, remote: &RemoteStatuses) -> CameraView {
    let spec = &record.spec;
    let live = if !spec.enabled {
        serde_json::to_value(CameraState::Disabled).unwrap_or_default()
    } else {
        match record.assignment {
            None => serde_json::json!({"state": "unassigned"}),
            Some(a) if a.owner == state.ctx.node_id => match state.ctx.status.get(&spec.id) {
                Some(s) => serde_json::to_value(&s).unwrap_or_default(),
                None => serde_json::to_value(CameraState::Connecting).unwrap_or_default(),
            },
            Some(a) => remote
                .get(&a.owner)
                .and_then(|m| m.get(&spec.id))
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"state": "unknown", "note": format!("node {} did not answer", a.owner)})),
        }
    };
    CameraView {
        id: spec.id.clone(),
        url: spec.url.clone(),
        username: spec.username.clone(),
        has_password: spec.password.is_some(),
        transport: spec.transport,
        enabled: spec.enabled,
        labels: spec.labels.clone(),
        bitrate_kbps: spec.bitrate_kbps,
        owner: record.assignment.map(|a| a.owner),
        epoch: record.assignment.map(|a| a.epoch),
        state: live,
    }
}

fn camera_id(raw: &str) -> Result<CameraId, ApiError> {
    CameraId::new(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn get_view(state: &ApiState, id: &CameraId) -> Result<CameraView, ApiError> {
    let owner = {
        let g = state.cluster.sm.lock();
        let record =
            g.state.camera(id).ok_or_else(|| ApiError::not_found(format!("camera {id} not found")))?;
        record.assignment.map(|a| a.owner)
    };
    let remote = remote_statuses(state, owner.into_iter().collect()).await;
    let g = state.cluster.sm.lock();
    let record = g.state.camera(id).ok_or_else(|| ApiError::not_found(format!("camera {id} not found")))?;
    Ok(view(state, record, &remote))
}

async fn create_camera(
    state: web::Data<ApiState>,
    body: web::Json<CameraCreate>,
) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner().into_spec()?;
    let id = spec.id.clone();
    write(&state, Command::PutCameras { cameras: vec![spec], replace: false }).await?;
    Ok(HttpResponse::Created().json(get_view(&state, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    node: Option<NodeId>,
}

async fn list_cameras(
    state: web::Data<ApiState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let owners: BTreeSet<NodeId> = {
        let g = state.cluster.sm.lock();
        g.state
            .cameras()
            .values()
            .filter_map(|c| c.assignment.map(|a| a.owner))
            .filter(|o| q.node.is_none_or(|n| n == *o))
            .collect()
    };
    let remote = remote_statuses(&state, owners).await;
    let g = state.cluster.sm.lock();
    let cameras: Vec<CameraView> = g
        .state
        .cameras()
        .values()
        .filter(|c| q.node.is_none() || c.assignment.map(|a| a.owner) == q.node)
        .map(|c| view(&state, c, &remote))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cameras": cameras })))
}

async fn get_camera(state: web::Data<ApiState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = camera_id(&path)?;
    Ok(HttpResponse::Ok().json(get_view(&state, &id).await?))
}

async fn patch_camera(
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<CameraUpdate>,
) -> Result<HttpResponse, ApiError> {
    let id = camera_id(&path)?;
    let b = body.into_inner();
    let url = b.url.as_deref().map(parse_camera_url).transpose()?;
    let patch = CameraPatch {
        url,
        username: b.username,
        password: b.password,
        transport: b.transport,
        enabled: b.enabled,
        labels: b.labels,
        bitrate_kbps: b.bitrate_kbps,
    };
    write(&state, Command::PatchCamera { id: id.clone(), patch }).await?;
    Ok(HttpResponse::Ok().json(get_view(&state, &id).await?))
}

async fn delete_camera(
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = camera_id(&path)?;
    write(&state, Command::RemoveCamera { id }).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ------------------------------------------------------------------ recordings

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: String,
    to: String,
}

fn parse_time(name: &str, raw: &str) -> Result<i64, ApiError> {
    let t =
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).map_err(|e| {
            ApiError::bad_request(format!("{name}: expected RFC 3339 (2026-12-03T10:00:00Z): {e}"))
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::bad_request(format!("{name}: out of range")))
}

fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

async fn recordings(
    state: web::Data<ApiState>,
    path: web::Path<String>,
    q: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = camera_id(&path)?;
    let from_ms = parse_time("from", &q.from)?;
    let to_ms = parse_time("to", &q.to)?;
    if to_ms <= from_ms {
        return Err(ApiError::bad_request("to must be after from"));
    }
    if to_ms - from_ms > 31 * 24 * 3600 * 1000 {
        return Err(ApiError::bad_request("range longer than 31 days; page through it"));
    }
    // No registry check: recordings outlive a camera's registration (a deleted camera's footage
    // stays listable until the bucket's retention removes it).
    let list = list_recordings(state.ctx.store.as_ref(), &state.ctx.prefix, &id, from_ms, to_ms)
        .await
        .map_err(|e| {
            if e.is_retryable() {
                ApiError::unavailable(format!("object store: {e}"))
            } else {
                ApiError::internal(format!("object store: {e}"))
            }
        })?;
    let segments: Vec<serde_json::Value> = list
        .segments
        .iter()
        .map(|s| {
            serde_json::json!({
                "start": format_time(s.start_ms), "end": format_time(s.end_ms),
                "start_ms": s.start_ms, "end_ms": s.end_ms,
                "key": s.key, "bytes": s.bytes, "node": s.node, "epoch": s.epoch,
            })
        })
        .collect();
    let gaps: Vec<serde_json::Value> = list
        .gaps
        .iter()
        .map(|g| serde_json::json!({"start": format_time(g.start_ms), "end": format_time(g.end_ms), "start_ms": g.start_ms, "end_ms": g.end_ms}))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "camera": id, "from": q.from, "to": q.to,
        "segments": segments, "gaps": gaps,
        "duplicates_merged": list.duplicates, "truncated": list.truncated,
    })))
}

// ------------------------------------------------------------------ cluster, health

async fn cluster_view(state: web::Data<ApiState>) -> HttpResponse {
    let m = state.cluster.raft.metrics().borrow().clone();
    let g = state.cluster.sm.lock();
    let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    let learners: Vec<u64> = m.membership_config.membership().learner_ids().collect();
    HttpResponse::Ok().json(serde_json::json!({
        "node": state.ctx.node_id,
        "leader": m.current_leader,
        "term": m.current_term,
        "voters": voters,
        "learners": learners,
        "commit_index": m.last_applied.map(|l| l.index),
        "cameras": g.state.cameras().len(),
        "nodes": g.state.nodes().len(),
    }))
}

async fn nodes_view(state: web::Data<ApiState>) -> HttpResponse {
    let m = state.cluster.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let learners: BTreeSet<u64> = membership.learner_ids().collect();
    let g = state.cluster.sm.lock();
    let nodes: Vec<serde_json::Value> = g
        .state
        .nodes()
        .values()
        .map(|n| {
            serde_json::json!({
                "id": n.info.id, "status": n.status, "az": n.info.az,
                "capacity_weight": n.info.capacity_weight, "admin_addr": n.info.admin_addr,
                "cameras": g.state.cameras_owned_by(n.info.id).count(),
                "raft": if m.current_leader == Some(n.info.id) { "leader" }
                        else if voters.contains(&n.info.id) { "voter" }
                        else if learners.contains(&n.info.id) { "learner" } else { "none" },
            })
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "nodes": nodes }))
}

// ------------------------------------------------------------------ nodes: drain, undrain, forget

fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("node id must be an unsigned integer, got {raw:?}")))
}

async fn drain_node(state: web::Data<ApiState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let node = node_id(&path)?;
    write(&state, Command::Drain { node }).await?;
    node_json(&state, node)
}

async fn undrain_node(state: web::Data<ApiState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let node = node_id(&path)?;
    write(&state, Command::Undrain { node }).await?;
    node_json(&state, node)
}

async fn forget_node(state: web::Data<ApiState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let node = node_id(&path)?;
    write(&state, Command::Forget { node }).await?;
    Ok(HttpResponse::NoContent().finish())
}

fn node_json(state: &ApiState, node: NodeId) -> Result<HttpResponse, ApiError> {
    let g = state.cluster.sm.lock();
    let n =
        g.state.nodes().get(&node).ok_or_else(|| ApiError::not_found(format!("node {node} not found")))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": node, "status": n.status, "admin_addr": n.info.admin_addr,
        "cameras": g.state.cameras_owned_by(node).count(),
    })))
}

// ------------------------------------------------------------------ internal: Raft RPC, join, propose, heartbeat

fn check_cluster(req: &HttpRequest, state: &ApiState) -> Result<(), ApiError> {
    if crate::control::same_cluster(req, &state.control.cluster_name) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "wrong_cluster",
            message: format!(
                "this node belongs to cluster {:?}; the request came from cluster {:?}",
                state.control.cluster_name,
                req.headers().get(http_net::CLUSTER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("(none)")
            ),
        })
    }
}

fn octets(body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/octet-stream").body(body)
}

async fn raft_append(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_cluster(&req, &state)?;
    let out = http_net::serve_append(&state.cluster.raft, &body)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(octets(out))
}

async fn raft_vote(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_cluster(&req, &state)?;
    let out = http_net::serve_vote(&state.cluster.raft, &body)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(octets(out))
}

async fn raft_snapshot(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_cluster(&req, &state)?;
    let out = http_net::serve_snapshot(&state.cluster.raft, &body)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(octets(out))
}

/// A forwarded proposal: commit it here (this node should be the leader; if it no longer is,
/// the answer is a retryable failure and the caller retries).
async fn internal_propose(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_cluster(&req, &state)?;
    let cmd: Command = codec::decode("propose", &body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let answer: ProposeAnswer = match state.cluster.write_indexed(cmd).await {
        Ok((response, index)) => Ok(crate::control::Committed { response, index }),
        Err(e) => match e.kind {
            camrec_cluster::node::WriteErrorKind::Fatal => Err(ProposeFailure::Fatal(e.message)),
            _ => Err(ProposeFailure::Unavailable(e.message)),
        },
    };
    Ok(octets(codec::encode("propose answer", &answer).map_err(|e| ApiError::internal(e.to_string()))?))
}

async fn internal_heartbeat(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_cluster(&req, &state)?;
    let hb: Heartbeat =
        codec::decode("heartbeat", &body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if state.heartbeats.try_send(hb.node).is_err() {
        metrics::counter!("camrec_heartbeats_dropped_total").increment(1);
    }
    Ok(HttpResponse::NoContent().finish())
}

/// A node asks to join: the leader adds it as a Raft learner, then registers it in the table.
/// Non-leaders forward the request to the leader.
async fn internal_join(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_cluster(&req, &state)?;
    let join: JoinRequest = codec::decode("join", &body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if join.cluster != state.control.cluster_name {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "wrong_cluster",
            message: format!(
                "node wants cluster {:?}, this is {:?}",
                join.cluster, state.control.cluster_name
            ),
        });
    }
    let leader = state.cluster.raft.metrics().borrow().current_leader;
    match leader {
        Some(l) if l == state.ctx.node_id => {}
        Some(l) => {
            let addr =
                state.control.addr_of(l).ok_or_else(|| ApiError::unavailable("leader address unknown"))?;
            let resp = reqwest::Client::new()
                .post(format!("http://{addr}/v1/internal/join"))
                .header(http_net::CLUSTER_HEADER, &state.control.cluster_name)
                .timeout(Duration::from_secs(10))
                .body(body.to_vec())
                .send()
                .await
                .map_err(|e| ApiError::unavailable(format!("forwarding join to leader {l}: {e}")))?;
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = resp.text().await.unwrap_or_default();
            return Ok(HttpResponse::build(status).content_type("application/json").body(text));
        }
        None => return Err(ApiError::unavailable("no Raft leader right now; retry")),
    }
    let info = join.info;
    let is_member =
        state.cluster.raft.metrics().borrow().membership_config.nodes().any(|(id, _)| *id == info.id);
    if !is_member {
        state
            .cluster
            .raft
            .add_learner(info.id, openraft::BasicNode::new(info.raft_addr.clone()), true)
            .await
            .map_err(|e| ApiError::unavailable(format!("adding node {} as learner: {e}", info.id)))?;
    }
    write(&state, Command::RegisterNode(info.clone())).await?;
    tracing::info!(node = info.id, addr = %info.admin_addr, "node joined");
    Ok(HttpResponse::Ok().json(serde_json::json!({"joined": info.id})))
}

/// This node's recording summary (for `camrec dev --nodes K`'s progress line).
async fn internal_summary(state: web::Data<ApiState>) -> HttpResponse {
    use crate::status::Counters;
    let (recording, cameras) = state.ctx.status.recording_count();
    let c = &state.ctx.status.counters;
    let buffer = state.ctx.buffer.stats();
    let status = state.cluster.sm.lock().state.nodes().get(&state.ctx.node_id).map(|n| n.status);
    HttpResponse::Ok().json(serde_json::json!({
        "node": state.ctx.node_id, "status": status,
        "leader": state.cluster.raft.metrics().borrow().current_leader,
        "recording": recording, "cameras": cameras,
        "segments_sealed": Counters::get(&c.segments_sealed),
        "segments_uploaded": Counters::get(&c.segments_uploaded),
        "bytes_uploaded": Counters::get(&c.bytes_uploaded),
        "bytes_recorded": Counters::get(&c.bytes_recorded),
        "upload_failures": Counters::get(&c.upload_failures),
        "buffer_errors": Counters::get(&c.buffer_errors),
        "upload_retries": Counters::get(&c.upload_retries),
        "segments_dropped": Counters::get(&c.segments_dropped),
        "bytes_dropped": Counters::get(&c.bytes_dropped),
        "pending_segments": buffer.pending_segments,
        "pending_bytes": buffer.pending_bytes,
        "open_bytes": state.ctx.buffer.open_bytes(),
        "buffer_quota_bytes": state.buffer_quota_bytes,
        "buffer_over_high_watermark": over_high_watermark(&state),
    }))
}

/// This node's live camera statuses (for other nodes answering camera queries).
async fn internal_status(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(state.ctx.status.snapshot())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The buffer governor's verdict: over the high watermark and not yet drained below the low one.
fn over_high_watermark(state: &ApiState) -> bool {
    state.ctx.status.buffer_over_high_watermark.load(std::sync::atomic::Ordering::Relaxed)
}

async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let m = state.cluster.raft.metrics().borrow().clone();
    let joined =
        m.current_leader.is_some() && state.cluster.sm.lock().state.nodes().contains_key(&state.ctx.node_id);
    let buffer = state.ctx.buffer.stats();
    let over = over_high_watermark(&state);
    let ready = joined && !over;
    let body = serde_json::json!({
        "ready": ready, "joined": joined, "leader": m.current_leader,
        "buffer_pending_bytes": buffer.pending_bytes, "buffer_pending_segments": buffer.pending_segments,
        "buffer_open_bytes": state.ctx.buffer.open_bytes(), "buffer_quota_bytes": state.buffer_quota_bytes,
        "buffer_over_high_watermark": over,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics_view(state: web::Data<ApiState>) -> HttpResponse {
    let Some(handle) = &state.metrics else {
        return HttpResponse::NotFound().finish();
    };
    let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
    for s in state.ctx.status.snapshot().values() {
        let name = match s.state {
            CameraState::Connecting => "connecting",
            CameraState::Recording => "recording",
            CameraState::Backoff { .. } => "backoff",
            CameraState::AuthFailed { .. } => "auth_failed",
            CameraState::Paused { .. } => "paused",
            CameraState::Disabled => "disabled",
        };
        *by_state.entry(name).or_default() += 1;
    }
    for name in ["connecting", "recording", "backoff", "auth_failed", "paused", "disabled"] {
        metrics::gauge!("camrec_cameras", "state" => name)
            .set(by_state.get(name).copied().unwrap_or(0) as f64);
    }
    let buffer = state.ctx.buffer.stats();
    metrics::gauge!("camrec_buffer_pending_bytes").set(buffer.pending_bytes as f64);
    metrics::gauge!("camrec_buffer_pending_segments").set(buffer.pending_segments as f64);
    metrics::gauge!("camrec_buffer_open_bytes").set(state.ctx.buffer.open_bytes() as f64);
    metrics::gauge!("camrec_buffer_quota_bytes").set(state.buffer_quota_bytes.unwrap_or(0) as f64);
    metrics::gauge!("camrec_buffer_over_high_watermark").set(if over_high_watermark(&state) {
        1.0
    } else {
        0.0
    });
    let m = state.cluster.raft.metrics().borrow().clone();
    metrics::gauge!("camrec_raft_term").set(m.current_term as f64);
    metrics::gauge!("camrec_raft_applied_index").set(m.last_applied.map_or(0, |l| l.index) as f64);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render())
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::not_found(format!("no route for {} {}", req.method(), req.path())).error_response()
}

/// A resource whose unsupported methods answer 405 (JSON) instead of falling through to 404.
fn res(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// A resource accepting bodies up to [`RPC_BODY_BYTES_MAX`] (Raft RPC, forwarded proposals).
fn big(path: &str) -> actix_web::Resource {
    res(path).app_data(web::PayloadConfig::new(RPC_BODY_BYTES_MAX))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{} is not supported on {}", req.method(), req.path()),
    }
    .error_response()
}

/// Registers every route and the JSON/query/path error handlers (bad input → 400 JSON).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(JSON_BODY_BYTES_MAX).error_handler(|err, _| {
        let message = match &err {
            actix_web::error::JsonPayloadError::ContentType => {
                "body: expected Content-Type: application/json".to_string()
            }
            other => format!("body: {other}"),
        };
        ApiError::bad_request(message).into()
    }))
    .app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::bad_request(format!("query: {err}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::bad_request(format!("path: {err}")).into()),
    )
    .service(res("/healthz").route(web::get().to(healthz)))
    .service(res("/readyz").route(web::get().to(readyz)))
    .service(res("/metrics").route(web::get().to(metrics_view)))
    .service(res("/v1/cluster").route(web::get().to(cluster_view)))
    .service(res("/v1/nodes").route(web::get().to(nodes_view)))
    .service(res("/v1/cameras").route(web::post().to(create_camera)).route(web::get().to(list_cameras)))
    .service(
        res("/v1/cameras/{id}")
            .route(web::get().to(get_camera))
            .route(web::patch().to(patch_camera))
            .route(web::delete().to(delete_camera)),
    )
    .service(res("/v1/cameras/{id}/recordings").route(web::get().to(recordings)))
    .service(res("/v1/nodes/{id}/drain").route(web::post().to(drain_node)))
    .service(res("/v1/nodes/{id}/undrain").route(web::post().to(undrain_node)))
    .service(res("/v1/nodes/{id}").route(web::delete().to(forget_node)))
    .service(res("/v1/internal/status").route(web::get().to(internal_status)))
    .service(res("/v1/internal/summary").route(web::get().to(internal_summary)))
    .service(big("/v1/raft/append").route(web::post().to(raft_append)))
    .service(big("/v1/raft/vote").route(web::post().to(raft_vote)))
    .service(big("/v1/raft/snapshot").route(web::post().to(raft_snapshot)))
    .service(big("/v1/internal/propose").route(web::post().to(internal_propose)))
    .service(big("/v1/internal/heartbeat").route(web::post().to(internal_heartbeat)))
    .service(big("/v1/internal/join").route(web::post().to(internal_join)))
    .default_service(web::to(not_found));
}
