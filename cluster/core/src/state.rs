//! The cluster state machine: cameras, nodes and the camera→owner assignment table.
//!
//! Every replica applies the same committed [`Command`]s in the same order through
//! [`ClusterState::apply`], which is pure and deterministic (BTreeMaps only, no clock, no
//! randomness), so every replica holds the same table. Placement decisions that follow from a
//! command (a new camera needs an owner, a node died) are made *inside* `apply` by
//! [`crate::placement`], so they are replicated rather than re-derived.
//!
//! Side effects a node must act on (a camera was assigned to it, moved away, changed) are queued
//! as [`Change`]s and drained with [`ClusterState::poll_change`]; the data plane follows them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ids::{CameraId, Epoch, NodeId};
use crate::placement;

/// How the camera's RTP packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

/// Default bitrate assumed for placement when the operator gives none.
pub const BITRATE_KBPS_DEFAULT: u32 = 2_000;

/// What the operator registered for a camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraSpec {
    pub id: CameraId,
    pub url: String,
    pub username: Option<String>,
    /// Write-only: never returned by the API, never logged.
    pub password: Option<String>,
    pub transport: Transport,
    pub enabled: bool,
    pub labels: BTreeMap<String, String>,
    /// Expected bitrate; the placement weight.
    pub bitrate_kbps: u32,
}

/// A partial update of a [`CameraSpec`]; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraPatch {
    pub url: Option<String>,
    pub username: Option<Option<String>>,
    pub password: Option<Option<String>>,
    pub transport: Option<Transport>,
    pub enabled: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub bitrate_kbps: Option<u32>,
}

/// Who records a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub owner: NodeId,
    /// Bumped on every owner change; strictly increasing per camera.
    pub epoch: Epoch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraRecord {
    pub spec: CameraSpec,
    /// `None` while disabled or while no node can take it.
    pub assignment: Option<Assignment>,
}

/// A node's self-description, sent when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Availability zone label, if known.
    pub az: Option<String>,
    /// Relative capacity; a node of weight 2 takes twice the bitrate of weight 1.
    pub capacity_weight: u32,
    /// Admin API address (`host:port`).
    pub admin_addr: String,
    /// Inter-node (Raft RPC) address (`host:port`).
    pub raft_addr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Alive and taking cameras.
    Active,
    /// Declared dead by the failure detector; owns nothing.
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub info: NodeInfo,
    pub status: NodeStatus,
}

/// A replicated command. Appended to the Raft log, applied by every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A node joined (or re-joined with new addresses).
    RegisterNode(NodeInfo),
    /// Create cameras; with `replace`, existing ids are overwritten instead of rejected.
    PutCameras {
        cameras: Vec<CameraSpec>,
        replace: bool,
    },
    PatchCamera {
        id: CameraId,
        patch: CameraPatch,
    },
    RemoveCamera {
        id: CameraId,
    },
    /// The failure detector declared the node dead: move exactly its cameras.
    NodeDown {
        node: NodeId,
    },
    /// A node that was down is heartbeating again.
    NodeUp {
        node: NodeId,
    },
}

/// Why a command was refused. Refusals are deterministic, so every replica agrees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("camera {0} not found")]
    CameraNotFound(CameraId),
    #[error("camera {0} already exists")]
    CameraExists(CameraId),
    #[error("node {0} not found")]
    NodeNotFound(NodeId),
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The result of applying a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub result: Option<CommandError>,
    /// Cameras created / updated / removed by this command.
    pub created: u32,
    pub updated: u32,
    pub removed: u32,
}

impl Response {
    fn error(e: CommandError) -> Response {
        Response { result: Some(e), ..Response::default() }
    }
}

/// Something a node's data plane must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The camera's owner, epoch or spec changed (or it was created).
    Camera { id: CameraId },
    /// The camera was deleted.
    CameraRemoved { id: CameraId, last_owner: Option<NodeId> },
}

/// Bound on queued [`Change`]s before the queue collapses into "resync everything".
pub const CHANGES_QUEUED_MAX: usize = 1 << 20;

/// The replicated state. Only [`ClusterState::apply`] mutates it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    cameras: BTreeMap<CameraId, CameraRecord>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    /// Next epoch to hand out; epochs are unique across the cluster.
    next_epoch: Epoch,
    #[serde(skip)]
    changes: VecDeque<Change>,
    /// Set when `changes` overflowed: the consumer must resync from the full table.
    #[serde(skip)]
    changes_overflowed: bool,
}

impl ClusterState {
    pub fn new() -> ClusterState {
        ClusterState { next_epoch: 1, ..ClusterState::default() }
    }

    pub fn cameras(&self) -> &BTreeMap<CameraId, CameraRecord> {
        &self.cameras
    }

    pub fn camera(&self, id: &CameraId) -> Option<&CameraRecord> {
        self.cameras.get(id)
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeRecord> {
        &self.nodes
    }

    /// Cameras whose current owner is `node`, in id order.
    pub fn cameras_owned_by(&self, node: NodeId) -> impl Iterator<Item = &CameraRecord> {
        self.cameras.values().filter(move |c| c.assignment.map(|a| a.owner) == Some(node))
    }

    /// Applies one committed command. Pure: same state + same command → same result everywhere.
    pub fn apply(&mut self, cmd: Command) -> Response {
        let response = match cmd {
            Command::RegisterNode(info) => self.apply_register_node(info),
            Command::PutCameras { cameras, replace } => self.apply_put_cameras(cameras, replace),
            Command::PatchCamera { id, patch } => self.apply_patch_camera(id, patch),
            Command::RemoveCamera { id } => self.apply_remove_camera(id),
            Command::NodeDown { node } => self.apply_node_status(node, NodeStatus::Down),
            Command::NodeUp { node } => self.apply_node_status(node, NodeStatus::Active),
        };
        self.check_invariants();
        response
    }

    /// Next change for the data plane. After an overflow, yields nothing and
    /// [`ClusterState::take_resync`] returns true once.
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// True once after the change queue overflowed (or after a snapshot install): the consumer
    /// must rebuild its view from the full table.
    pub fn take_resync(&mut self) -> bool {
        std::mem::take(&mut self.changes_overflowed)
    }

    /// Marks that consumers must resync (used after installing a snapshot).
    pub fn request_resync(&mut self) {
        self.changes.clear();
        self.changes_overflowed = true;
    }

    fn push_change(&mut self, change: Change) {
        if self.changes_overflowed {
            return;
        }
        if self.changes.len() >= CHANGES_QUEUED_MAX {
            self.request_resync();
            return;
        }
        self.changes.push_back(change);
    }

    fn apply_register_node(&mut self, info: NodeInfo) -> Response {
        if info.capacity_weight == 0 {
            return Response::error(CommandError::Invalid("capacity_weight must be > 0".into()));
        }
        let id = info.id;
        let was_down = self.nodes.get(&id).is_none_or(|n| n.status == NodeStatus::Down);
        self.nodes.insert(id, NodeRecord { info, status: NodeStatus::Active });
        if was_down {
            self.place_unassigned();
        }
        Response::default()
    }

    fn apply_put_cameras(&mut self, cameras: Vec<CameraSpec>, replace: bool) -> Response {
        // Validate everything first: a bulk command is all-or-nothing.
        let mut seen = BTreeSet::new();
        for spec in &cameras {
            if let Err(e) = validate_spec(spec) {
                return Response::error(e);
            }
            if !seen.insert(&spec.id) {
                return Response::error(CommandError::Invalid(format!("camera {} listed twice", spec.id)));
            }
            if !replace && self.cameras.contains_key(&spec.id) {
                return Response::error(CommandError::CameraExists(spec.id.clone()));
            }
        }
        let mut response = Response::default();
        for spec in cameras {
            let id = spec.id.clone();
            match self.cameras.get_mut(&id) {
                Some(record) => {
                    response.updated += 1;
                    record.spec = spec;
                    if !record.spec.enabled {
                        record.assignment = None;
                    }
                }
                None => {
                    response.created += 1;
                    self.cameras.insert(id.clone(), CameraRecord { spec, assignment: None });
                }
            }
            self.push_change(Change::Camera { id });
        }
        self.place_unassigned();
        response
    }

    fn apply_patch_camera(&mut self, id: CameraId, patch: CameraPatch) -> Response {
        let Some(record) = self.cameras.get(&id) else {
            return Response::error(CommandError::CameraNotFound(id));
        };
        let mut spec = record.spec.clone();
        if let Some(url) = patch.url {
            spec.url = url;
        }
        if let Some(username) = patch.username {
            spec.username = username;
        }
        if let Some(password) = patch.password {
            spec.password = password;
        }
        if let Some(transport) = patch.transport {
            spec.transport = transport;
        }
        if let Some(enabled) = patch.enabled {
            spec.enabled = enabled;
        }
        if let Some(labels) = patch.labels {
            spec.labels = labels;
        }
        if let Some(bitrate_kbps) = patch.bitrate_kbps {
            spec.bitrate_kbps = bitrate_kbps;
        }
        if let Err(e) = validate_spec(&spec) {
            return Response::error(e);
        }
        self.apply_put_cameras(vec![spec], true)
    }

    fn apply_remove_camera(&mut self, id: CameraId) -> Response {
        match self.cameras.remove(&id) {
            None => Response::error(CommandError::CameraNotFound(id)),
            Some(record) => {
                self.push_change(Change::CameraRemoved {
                    id,
                    last_owner: record.assignment.map(|a| a.owner),
                });
                Response { removed: 1, ..Response::default() }
            }
        }
    }

    fn apply_node_status(&mut self, node: NodeId, status: NodeStatus) -> Response {
        let Some(record) = self.nodes.get_mut(&node) else {
            return Response::error(CommandError::NodeNotFound(node));
        };
        if record.status == status {
            return Response::default();
        }
        record.status = status;
        if status == NodeStatus::Down {
            // Orphan exactly this node's cameras, then place them.
            let orphans: Vec<CameraId> = self.cameras_owned_by(node).map(|c| c.spec.id.clone()).collect();
            for id in &orphans {
                if let Some(record) = self.cameras.get_mut(id) {
                    record.assignment = None;
                }
            }
        }
        self.place_unassigned();
        Response::default()
    }

    /// Gives every enabled, unassigned camera an owner among the active nodes.
    fn place_unassigned(&mut self) {
        let unassigned: Vec<CameraId> = self
            .cameras
            .values()
            .filter(|c| c.spec.enabled && c.assignment.is_none())
            .map(|c| c.spec.id.clone())
            .collect();
        if unassigned.is_empty() {
            return;
        }
        let mut loads = placement::NodeLoads::new(self);
        for id in unassigned {
            let bitrate_kbps = self.cameras[&id].spec.bitrate_kbps;
            let Some(owner) = loads.take_least_loaded(bitrate_kbps) else {
                return; // no active node: cameras wait unassigned
            };
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            if let Some(record) = self.cameras.get_mut(&id) {
                record.assignment = Some(Assignment { owner, epoch });
            }
            self.push_change(Change::Camera { id });
        }
    }

    /// Cheap structural checks after every command (TigerBeetle-style).
    fn check_invariants(&self) {
        for (id, record) in &self.cameras {
            assert_eq!(id, &record.spec.id, "camera keyed under the wrong id");
            if let Some(a) = record.assignment {
                assert!(record.spec.enabled, "disabled camera {id} has an owner");
                assert!(a.epoch < self.next_epoch, "camera {id} epoch {} from the future", a.epoch);
                let owner = self.nodes.get(&a.owner);
                assert!(
                    owner.is_some_and(|n| n.status == NodeStatus::Active),
                    "camera {id} owned by node {} which is not active",
                    a.owner
                );
            }
        }
    }
}

fn validate_spec(spec: &CameraSpec) -> Result<(), CommandError> {
    let url = spec.url.as_str();
    if !(url.starts_with("rtsp://") || url.starts_with("rtsps://")) {
        return Err(CommandError::Invalid(format!(
            "camera {}: url must start with rtsp:// or rtsps://",
            spec.id
        )));
    }
    if url.len() > 2048 {
        return Err(CommandError::Invalid(format!("camera {}: url longer than 2048 bytes", spec.id)));
    }
    if spec.bitrate_kbps == 0 || spec.bitrate_kbps > 1_000_000 {
        return Err(CommandError::Invalid(format!("camera {}: bitrate_kbps must be 1..=1000000", spec.id)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            az: None,
            capacity_weight: 1,
            admin_addr: format!("127.0.0.1:{}", 8080 + id),
            raft_addr: format!("127.0.0.1:{}", 9080 + id),
        }
    }

    fn cam(id: &str) -> CameraSpec {
        CameraSpec {
            id: CameraId::new(id).unwrap(),
            url: format!("rtsp://127.0.0.1:8554/{id}"),
            username: None,
            password: None,
            transport: Transport::Tcp,
            enabled: true,
            labels: BTreeMap::new(),
            bitrate_kbps: BITRATE_KBPS_DEFAULT,
        }
    }

    fn owners(s: &ClusterState) -> Vec<(String, Option<(NodeId, Epoch)>)> {
        s.cameras()
            .values()
            .map(|c| (c.spec.id.to_string(), c.assignment.map(|a| (a.owner, a.epoch))))
            .collect()
    }

    #[test]
    fn cameras_wait_for_a_node_then_get_placed() {
        let mut s = ClusterState::new();
        let r = s.apply(Command::PutCameras { cameras: vec![cam("a"), cam("b")], replace: false });
        assert_eq!((r.result, r.created), (None, 2));
        assert_eq!(owners(&s), vec![("a".into(), None), ("b".into(), None)]);
        s.apply(Command::RegisterNode(node(1)));
        assert_eq!(owners(&s), vec![("a".into(), Some((1, 1))), ("b".into(), Some((1, 2)))]);
    }

    #[test]
    fn duplicate_create_is_refused_whole() {
        let mut s = ClusterState::new();
        s.apply(Command::RegisterNode(node(1)));
        s.apply(Command::PutCameras { cameras: vec![cam("a")], replace: false });
        let before = s.clone();
        let r = s.apply(Command::PutCameras { cameras: vec![cam("b"), cam("a")], replace: false });
        assert_eq!(r.result, Some(CommandError::CameraExists(CameraId::new("a").unwrap())));
        assert_eq!(owners(&s), owners(&before));
    }

    #[test]
    fn disable_releases_and_enable_reassigns_with_new_epoch() {
        let mut s = ClusterState::new();
        s.apply(Command::RegisterNode(node(1)));
        s.apply(Command::PutCameras { cameras: vec![cam("a")], replace: false });
        let id = CameraId::new("a").unwrap();
        let patch = |enabled| CameraPatch { enabled: Some(enabled), ..CameraPatch::default() };
        s.apply(Command::PatchCamera { id: id.clone(), patch: patch(false) });
        assert_eq!(owners(&s), vec![("a".into(), None)]);
        s.apply(Command::PatchCamera { id: id.clone(), patch: patch(true) });
        assert_eq!(owners(&s), vec![("a".into(), Some((1, 2)))]);
    }

    #[test]
    fn node_down_moves_exactly_its_cameras() {
        let mut s = ClusterState::new();
        s.apply(Command::RegisterNode(node(1)));
        s.apply(Command::RegisterNode(node(2)));
        s.apply(Command::PutCameras {
            cameras: (0..4).map(|i| cam(&format!("c{i}"))).collect(),
            replace: false,
        });
        let before = owners(&s);
        s.apply(Command::NodeDown { node: 2 });
        let after = owners(&s);
        for (b, a) in before.iter().zip(&after) {
            let (b_owner, a_owner) = (b.1.unwrap(), a.1.unwrap());
            assert_eq!(a_owner.0, 1);
            if b_owner.0 == 1 {
                assert_eq!(a_owner, b_owner, "a survivor's camera must not move");
            } else {
                assert!(a_owner.1 > b_owner.1, "moved camera gets a newer epoch");
            }
        }
    }

    #[test]
    fn invalid_specs_are_refused() {
        let mut s = ClusterState::new();
        let mut bad = cam("a");
        bad.url = "http://x".into();
        assert!(matches!(
            s.apply(Command::PutCameras { cameras: vec![bad], replace: false }).result,
            Some(CommandError::Invalid(_))
        ));
        let r = s.apply(Command::PutCameras { cameras: vec![cam("a"), cam("a")], replace: true });
        assert!(matches!(r.result, Some(CommandError::Invalid(_))));
        assert!(s.cameras().is_empty());
    }

    #[test]
    fn changes_are_reported_in_order() {
        let mut s = ClusterState::new();
        s.apply(Command::RegisterNode(node(1)));
        s.apply(Command::PutCameras { cameras: vec![cam("a")], replace: false });
        s.apply(Command::RemoveCamera { id: CameraId::new("a").unwrap() });
        let mut changes = Vec::new();
        while let Some(c) = s.poll_change() {
            changes.push(c);
        }
        let a = CameraId::new("a").unwrap();
        assert_eq!(
            changes,
            vec![
                Change::Camera { id: a.clone() },
                Change::Camera { id: a.clone() },
                Change::CameraRemoved { id: a, last_owner: Some(1) }
            ]
        );
    }
}
