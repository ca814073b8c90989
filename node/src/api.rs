//! The admin API (actix-web): cameras CRUD with live state, recordings, cluster and node views,
//! health, readiness and Prometheus metrics. Handlers translate HTTP into cluster commands and
//! queries; they decide nothing about the cluster. Errors are JSON `{error: {code, message}}`;
//! bad input is always a 4xx, never a 5xx.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use camrec_cluster::node::{ClusterNode, WriteErrorKind};
use camrec_cluster_core::ids::{CameraId, NodeId};
use camrec_cluster_core::state::{
    CameraPatch, CameraRecord, CameraSpec, Command, CommandError, Transport, BITRATE_KBPS_DEFAULT,
};
use camrec_node_core::state::CameraState;
use camrec_storage::recordings::list_recordings;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::node_ctx::NodeCtx;

/// How long a write waits for Raft before answering a retryable 503.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JSON body accepted (a bulk import of ~10k cameras).
pub const JSON_BODY_BYTES_MAX: usize = 4 << 20;

pub struct ApiState {
    pub ctx: Arc<NodeCtx>,
    pub cluster: Arc<ClusterNode>,
    pub metrics: Option<PrometheusHandle>,
    pub buffer_quota_bytes: Option<u64>,
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
    }
}

/// Proposes a command through Raft and maps every failure to a clear API error.
async fn write(state: &ApiState, cmd: Command) -> Result<camrec_cluster_core::state::Response, ApiError> {
    let r = tokio::time::timeout(WRITE_TIMEOUT, state.cluster.write(cmd))
        .await
        .map_err(|_| ApiError::unavailable("the cluster did not commit the write within 5 s; retry"))?;
    let r = r.map_err(|e| match e.kind {
        WriteErrorKind::Unavailable | WriteErrorKind::NotLeader { .. } => ApiError::unavailable(e.message),
        WriteErrorKind::Fatal => ApiError::internal(e.message),
    })?;
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

fn view(state: &ApiState, record: &CameraRecord) -> CameraView {
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
            Some(_) => serde_json::json!({"state": "remote"}),
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

fn get_view(state: &ApiState, id: &CameraId) -> Result<CameraView, ApiError> {
    let g = state.cluster.sm.lock();
    let record = g.state.camera(id).ok_or_else(|| ApiError::not_found(format!("camera {id} not found")))?;
    Ok(view(state, record))
}

async fn create_camera(
    state: web::Data<ApiState>,
    body: web::Json<CameraCreate>,
) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner().into_spec()?;
    let id = spec.id.clone();
    write(&state, Command::PutCameras { cameras: vec![spec], replace: false }).await?;
    Ok(HttpResponse::Created().json(get_view(&state, &id)?))
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
    let g = state.cluster.sm.lock();
    let cameras: Vec<CameraView> = g
        .state
        .cameras()
        .values()
        .filter(|c| q.node.is_none() || c.assignment.map(|a| a.owner) == q.node)
        .map(|c| view(&state, c))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cameras": cameras })))
}

async fn get_camera(state: web::Data<ApiState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = camera_id(&path)?;
    Ok(HttpResponse::Ok().json(get_view(&state, &id)?))
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
    Ok(HttpResponse::Ok().json(get_view(&state, &id)?))
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
    if state.cluster.sm.lock().state.camera(&id).is_none() {
        return Err(ApiError::not_found(format!("camera {id} not found")));
    }
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
            })
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "nodes": nodes }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let m = state.cluster.raft.metrics().borrow().clone();
    let joined =
        m.current_leader.is_some() && state.cluster.sm.lock().state.nodes().contains_key(&state.ctx.node_id);
    let buffer = state.ctx.buffer.stats();
    let under_quota = state.buffer_quota_bytes.is_none_or(|q| buffer.pending_bytes < q);
    let body = serde_json::json!({
        "ready": joined && under_quota, "joined": joined, "leader": m.current_leader,
        "buffer_pending_bytes": buffer.pending_bytes, "buffer_pending_segments": buffer.pending_segments,
    });
    if joined && under_quota {
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
            CameraState::Disabled => "disabled",
        };
        *by_state.entry(name).or_default() += 1;
    }
    for name in ["connecting", "recording", "backoff", "auth_failed", "disabled"] {
        metrics::gauge!("camrec_cameras", "state" => name)
            .set(by_state.get(name).copied().unwrap_or(0) as f64);
    }
    let buffer = state.ctx.buffer.stats();
    metrics::gauge!("camrec_buffer_pending_bytes").set(buffer.pending_bytes as f64);
    metrics::gauge!("camrec_buffer_pending_segments").set(buffer.pending_segments as f64);
    let m = state.cluster.raft.metrics().borrow().clone();
    metrics::gauge!("camrec_raft_term").set(m.current_term as f64);
    metrics::gauge!("camrec_raft_applied_index").set(m.last_applied.map_or(0, |l| l.index) as f64);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render())
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::not_found(format!("no route for {} {}", req.method(), req.path())).error_response()
}

/// Registers every route and the JSON/query/path error handlers (bad input → 400 JSON).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_BODY_BYTES_MAX)
            .error_handler(|err, _| ApiError::bad_request(format!("body: {err}")).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::bad_request(format!("query: {err}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::bad_request(format!("path: {err}")).into()),
    )
    .route("/healthz", web::get().to(healthz))
    .route("/readyz", web::get().to(readyz))
    .route("/metrics", web::get().to(metrics_view))
    .route("/v1/cluster", web::get().to(cluster_view))
    .route("/v1/nodes", web::get().to(nodes_view))
    .route("/v1/cameras", web::post().to(create_camera))
    .route("/v1/cameras", web::get().to(list_cameras))
    .route("/v1/cameras/{id}", web::get().to(get_camera))
    .route("/v1/cameras/{id}", web::patch().to(patch_camera))
    .route("/v1/cameras/{id}", web::delete().to(delete_camera))
    .route("/v1/cameras/{id}/recordings", web::get().to(recordings))
    .default_service(web::to(not_found));
}
