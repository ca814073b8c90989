//! Tidy: the architecture rules as a test (rust-analyzer's `tidy.rs` idea).
//!
//! - Sans-IO cores (`camrec-cluster-core`, `camrec-node-core`) depend on no IO/async/actor/SDK
//!   crate, even transitively (read from `cargo metadata`).
//! - Core sources read no clock and draw no unseeded randomness, and use no HashMap/HashSet.
//! - Every Rust file starts with a `//!` doc saying what it is for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const CORES: [&str; 2] = ["camrec-cluster-core", "camrec-node-core"];
/// Crates a core must never reach.
const FORBIDDEN: [&str; 12] = [
    "tokio",
    "mio",
    "ractor",
    "retina",
    "actix-web",
    "actix-rt",
    "aws-sdk-s3",
    "aws-config",
    "sled",
    "openraft",
    "reqwest",
    "hyper",
];
/// Source patterns a core must not contain.
const CORE_BANNED: [&str; 6] =
    ["Instant::now", "SystemTime::now", "thread_rng", "rand::random", "HashMap", "HashSet"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").to_path_buf()
}

#[test]
fn cores_reach_no_io_crates() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap_or("").to_string(), p["name"].as_str().unwrap_or("").to_string()))
        .collect();
    // Normal (non-dev, non-build) dependency edges.
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve") {
        let id = node["id"].as_str().unwrap_or("").to_string();
        let deps = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| d["dep_kinds"].as_array().is_some_and(|k| k.iter().any(|k| k["kind"].is_null())))
            .map(|d| d["pkg"].as_str().unwrap_or("").to_string())
            .collect();
        edges.insert(id, deps);
    }
    for core in CORES {
        let start =
            names.iter().find(|(_, n)| n.as_str() == core).map(|(id, _)| id.clone()).expect("core package");
        let mut seen = BTreeSet::new();
        let mut stack = vec![(start, vec![core.to_string()])];
        while let Some((id, path)) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            for dep in edges.get(&id).into_iter().flatten() {
                let name = &names[dep];
                let mut p = path.clone();
                p.push(name.clone());
                assert!(
                    !FORBIDDEN.contains(&name.as_str()),
                    "sans-IO core reaches an IO crate: {}",
                    p.join(" -> ")
                );
                stack.push((dep.clone(), p));
            }
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if !matches!(name, "target" | ".git" | "fuzz") && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn core_sources_read_no_clock_and_no_unseeded_randomness() {
    for dir in ["cluster/core/src", "node/core/src"] {
        let mut files = Vec::new();
        rust_files(&root().join(dir), &mut files);
        assert!(!files.is_empty());
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for banned in CORE_BANNED {
                    assert!(
                        !code.contains(banned),
                        "{}:{}: `{banned}` in a sans-IO core",
                        f.display(),
                        n + 1
                    );
                }
            }
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap_or_default().trim_start().starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a leading //! doc: {missing:#?}");
}
