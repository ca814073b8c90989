//! Node configuration: layered defaults < file < environment (`CAMREC__SECTION__KEY`), loaded
//! with the `config` crate into typed sections. Unknown keys are rejected by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The whole node configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub recorder: RecorderSection,
    pub storage: StorageSection,
    pub cluster: ClusterSection,
    pub log: LogSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Raft node id; unique in the cluster, never reused.
    pub id: u64,
    /// Root of everything this node stores: `buffer/`, `raft/`, `objects/` (local store).
    pub data_dir: PathBuf,
    /// Admin API listen address.
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach the admin API (defaults to `listen`).
    pub advertise: Option<String>,
    pub az: Option<String>,
    pub capacity_weight: u32,
    /// `config` (use `id` and `az` above) or `ec2` (node id from the instance id, AZ from the
    /// instance placement, both read with IMDSv2 at start).
    pub identity: IdentitySource,
    /// Instance metadata endpoint (tests point it at a fake).
    pub imds_endpoint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    Config,
    Ec2,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecorderSection {
    pub segment_target_ms: u32,
    pub fragment_target_ms: u32,
    pub frame_bytes_max: usize,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub auth_backoff_base_ms: u64,
    pub stall_timeout_ms: u64,
    /// Frames queued between a camera's RTSP session and its actor before the session waits.
    pub frames_queued_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `{data_dir}/objects/` (the embedded default).
    Local,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub backend: Backend,
    /// Key prefix inside the bucket / objects dir (may be empty).
    pub prefix: String,
    /// Root of the local object store (default `{data_dir}/objects`); nodes of one host may
    /// share it (writes are create-only).
    pub local_dir: Option<PathBuf>,
    pub upload_concurrency_max: usize,
    pub upload_retry_base_ms: u64,
    pub upload_retry_cap_ms: u64,
    /// Disk quota of the local buffer (sealed segments waiting for upload plus segments being
    /// written), bytes. 0 (the default) = unlimited: during a long object-store outage the
    /// buffer grows until the disk is full, and then seals fail (counted as buffer errors).
    /// Set it below the free space of the data disk.
    pub buffer_quota_bytes: u64,
    /// Above this share of the quota the node is not ready (`/readyz` 503) and the
    /// `buffer_full_policy` acts.
    pub buffer_high_watermark_percent: u8,
    /// The policy acts until usage is back at or below this share of the quota; the node is
    /// ready again once uploads drain the buffer below it.
    pub buffer_low_watermark_percent: u8,
    pub buffer_full_policy: BufferFullPolicy,
    pub s3: S3Section,
}

/// What the node does when its buffer exceeds the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BufferFullPolicy {
    /// Drop the oldest pending segments down to the low watermark (each drop logged at WARN,
    /// counted in `/metrics`, `/v1/internal/summary` and the camera's status).
    DropOldest,
    /// Keep what is buffered; open no new segments until uploads drain it below the low
    /// watermark (cameras show `paused`).
    StopRecording,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    pub bucket: String,
    pub region: String,
    /// Custom endpoint for S3-compatible stores (`http://127.0.0.1:9000`); unset for AWS.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// Static credentials for test servers only; production uses the default credential chain
    /// (EC2 instance profile).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Cluster name; nodes refuse Raft traffic and joins from another cluster.
    pub name: String,
    /// Initialize a new single-voter cluster on an empty store (exactly one node, once).
    pub bootstrap: bool,
    /// Admin addresses (`host:port`) of existing members to join through.
    pub seeds: Vec<String>,
    /// Raft voters to keep (3 or 5); every other node is a learner.
    pub voters: usize,
    pub heartbeat_interval_ms: u64,
    /// A node not heard from for this long is declared dead by the leader.
    pub dead_after_ms: u64,
    /// Most handovers one rebalance round plans.
    pub rebalance_moves_max: u32,
    pub rebalance_interval_ms: u64,
    /// On SIGTERM, how long to wait for the node's cameras to be handed over before exiting.
    pub drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// tracing-subscriber filter, e.g. `info,camrec=debug`.
    pub filter: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            id: 1,
            data_dir: PathBuf::from("camrec-data"),
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            advertise: None,
            az: None,
            capacity_weight: 1,
            identity: IdentitySource::Config,
            imds_endpoint: "http://169.254.169.254".into(),
        }
    }
}

impl Default for RecorderSection {
    fn default() -> Self {
        let core = camrec_node_core::recorder::RecorderConfig::default();
        RecorderSection {
            segment_target_ms: core.segment_target_ms,
            fragment_target_ms: core.fragment_target_ms,
            frame_bytes_max: core.frame_bytes_max,
            backoff_base_ms: core.backoff_base_ms,
            backoff_cap_ms: core.backoff_cap_ms,
            auth_backoff_base_ms: core.auth_backoff_base_ms,
            stall_timeout_ms: core.stall_timeout_ms,
            frames_queued_max: 256,
        }
    }
}

impl RecorderSection {
    pub fn core_config(&self) -> camrec_node_core::recorder::RecorderConfig {
        camrec_node_core::recorder::RecorderConfig {
            segment_target_ms: self.segment_target_ms,
            fragment_target_ms: self.fragment_target_ms,
            frame_bytes_max: self.frame_bytes_max,
            backoff_base_ms: self.backoff_base_ms,
            backoff_cap_ms: self.backoff_cap_ms,
            auth_backoff_base_ms: self.auth_backoff_base_ms,
            stall_timeout_ms: self.stall_timeout_ms,
            ..camrec_node_core::recorder::RecorderConfig::default()
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: Backend::Local,
            prefix: String::new(),
            local_dir: None,
            upload_concurrency_max: 8,
            upload_retry_base_ms: 500,
            upload_retry_cap_ms: 30_000,
            buffer_quota_bytes: 0,
            buffer_high_watermark_percent: 90,
            buffer_low_watermark_percent: 80,
            buffer_full_policy: BufferFullPolicy::DropOldest,
            s3: S3Section { region: "us-east-1".into(), ..S3Section::default() },
        }
    }
}

impl StorageSection {
    pub fn quota_config(&self) -> camrec_node_core::quota::QuotaConfig {
        camrec_node_core::quota::QuotaConfig {
            quota_bytes: self.buffer_quota_bytes,
            high_watermark_percent: self.buffer_high_watermark_percent,
            low_watermark_percent: self.buffer_low_watermark_percent,
            policy: match self.buffer_full_policy {
                BufferFullPolicy::DropOldest => camrec_node_core::quota::FullPolicy::DropOldest,
                BufferFullPolicy::StopRecording => camrec_node_core::quota::FullPolicy::StopRecording,
            },
        }
    }
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            name: "camrec".into(),
            bootstrap: false,
            seeds: Vec::new(),
            voters: 3,
            heartbeat_interval_ms: 500,
            dead_after_ms: 2_000,
            rebalance_moves_max: 200,
            rebalance_interval_ms: 2_000,
            drain_timeout_ms: 120_000,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { format: "text".into(), filter: "info".into() }
    }
}

impl NodeConfig {
    /// Loads defaults < `file` < `CAMREC__SECTION__KEY` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<NodeConfig> {
        let mut builder = config::Config::builder()
            .add_source(config::Config::try_from(&NodeConfig::default()).context("encoding defaults")?);
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("CAMREC")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let merged = builder.build().context("reading configuration")?;
        let where_ = match file {
            Some(f) => format!("{} or a CAMREC__* environment variable", f.display()),
            None => "CAMREC__* environment variables".to_string(),
        };
        let cfg: NodeConfig =
            merged.try_deserialize().with_context(|| format!("invalid configuration in {where_}"))?;
        cfg.validate().with_context(|| format!("invalid configuration in {where_}"))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.node.id > 0, "node.id must be > 0");
        anyhow::ensure!(self.node.capacity_weight > 0, "node.capacity_weight must be > 0");
        anyhow::ensure!(
            (1_000..=600_000).contains(&self.recorder.segment_target_ms),
            "recorder.segment_target_ms must be within 1000..=600000"
        );
        anyhow::ensure!(self.recorder.frames_queued_max > 0, "recorder.frames_queued_max must be > 0");
        anyhow::ensure!(
            self.storage.upload_concurrency_max > 0,
            "storage.upload_concurrency_max must be > 0"
        );
        anyhow::ensure!(
            self.storage.buffer_low_watermark_percent < self.storage.buffer_high_watermark_percent
                && self.storage.buffer_high_watermark_percent <= 100,
            "storage.buffer_low_watermark_percent must be below storage.buffer_high_watermark_percent, \
             which must be at most 100"
        );
        anyhow::ensure!(matches!(self.cluster.voters, 1 | 3 | 5), "cluster.voters must be 1, 3 or 5");
        anyhow::ensure!(
            self.cluster.dead_after_ms >= 2 * self.cluster.heartbeat_interval_ms,
            "cluster.dead_after_ms must be at least twice cluster.heartbeat_interval_ms"
        );
        anyhow::ensure!(
            self.cluster.bootstrap || !self.cluster.seeds.is_empty(),
            "set cluster.bootstrap = true on the first node of a new cluster, or cluster.seeds to join one"
        );
        if self.storage.backend == Backend::S3 {
            anyhow::ensure!(
                !self.storage.s3.bucket.is_empty(),
                "storage.s3.bucket is required with backend = \"s3\""
            );
        }
        Ok(())
    }

    /// Address clients and peers use for this node's admin API.
    pub fn advertise_addr(&self) -> String {
        self.node.advertise.clone().unwrap_or_else(|| self.node.listen.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config dir") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                NodeConfig::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected example configs in {}", dir.display());
    }

    #[test]
    fn a_node_must_bootstrap_or_have_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.toml");
        std::fs::write(&path, "").unwrap();
        let err = format!("{:#}", NodeConfig::load(Some(&path)).unwrap_err());
        assert!(err.contains("cluster.bootstrap") && err.contains("cluster.seeds"), "{err}");
    }

    #[test]
    fn buffer_limits_parse_and_validate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quota.toml");
        let base = "[cluster]\nbootstrap = true\n[storage]\nbuffer_quota_bytes = 3000000\n";
        std::fs::write(&path, format!("{base}buffer_full_policy = \"stop-recording\"\n")).unwrap();
        let cfg = NodeConfig::load(Some(&path)).unwrap();
        let quota = cfg.storage.quota_config();
        assert_eq!(quota.policy, camrec_node_core::quota::FullPolicy::StopRecording);
        assert_eq!(
            (quota.high_watermark_bytes(), quota.low_watermark_bytes()),
            (Some(2_700_000), Some(2_400_000))
        );
        for (bad, needle) in [
            ("buffer_high_watermark_percent = 80\n", "buffer_low_watermark_percent"),
            ("buffer_high_watermark_percent = 101\n", "at most 100"),
            ("buffer_full_policy = \"drop-newest\"\n", "drop-newest"),
        ] {
            std::fs::write(&path, format!("{base}{bad}")).unwrap();
            let err = format!("{:#}", NodeConfig::load(Some(&path)).unwrap_err());
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert_eq!(NodeConfig::default().storage.quota_config().high_watermark_bytes(), None, "unlimited");
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[recorder]\nsegment_target_msec = 5000\n").unwrap();
        let err = format!("{:#}", NodeConfig::load(Some(&path)).unwrap_err());
        assert!(err.contains("segment_target_msec"), "{err}");
    }
}
