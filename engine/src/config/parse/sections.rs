//! The smaller top-level sections of a mesh file: `governance`, `lineage`,
//! `quality` and `history`.

use std::path::PathBuf;

use serde_norway::Value;

use super::{Walker, describe, join};
use crate::config::{AuditConfig, ChainKey, GovernanceConfig, LineageConfig, LineageSink};
use crate::history::HistoryConfig;

impl Walker<'_> {
    pub(super) fn governance(&mut self, root: &Value) -> Option<GovernanceConfig> {
        let value = root.get("governance")?;
        let path = "governance";
        let map = self.mapping(value, path, &["policies", "audit"])?;
        let policies = self.file_path(map, "policies", path);
        if policies.is_none() && map.get("policies").is_none() {
            self.problem(&join(path, "policies"), "missing (the mesh-wide policy file, e.g. policies.yaml)");
        }
        let mut audit = AuditConfig { path: self.base.join("audit/audit.jsonl"), ..AuditConfig::default() };
        if let Some(value) = map.get("audit") {
            let apath = join(path, "audit");
            let keys = [
                "path",
                "max_bytes",
                "keep",
                "archive_dir",
                "max_age_days",
                "quota_bytes_per_minute",
                "chain_key_env",
                "chain_key_file",
            ];
            if let Some(amap) = self.mapping(value, &apath, &keys) {
                if let Some(p) = self.file_path(amap, "path", &apath) {
                    audit.path = p;
                }
                if amap.get("archive_dir").is_some() {
                    audit.archive_dir = self.file_path(amap, "archive_dir", &apath);
                }
                if let Some(key) = self.secret_from_env_or_file(amap, "chain_key", &apath, false) {
                    if key.trim().len() < 16 {
                        self.problem(&join(&apath, "chain_key"), "the chain key must hold at least 16 bytes");
                    } else {
                        audit.chain_key = Some(ChainKey(key.trim().as_bytes().into()));
                    }
                }
                let mut max_age = 0;
                for (key, slot) in [
                    ("max_bytes", &mut audit.max_bytes),
                    ("keep", &mut audit.keep),
                    ("quota_bytes_per_minute", &mut audit.quota_bytes_per_minute),
                    ("max_age_days", &mut max_age),
                ] {
                    match amap.get(key) {
                        None => {}
                        Some(v) => match v.as_u64() {
                            Some(n) if n > 0 => *slot = n,
                            _ => self.problem(
                                &join(&apath, key),
                                format!("expected a positive integer, found {}", describe(v)),
                            ),
                        },
                    }
                }
                if max_age > 0 {
                    audit.max_age_days = Some(max_age);
                }
                if audit.archive_dir.as_ref().is_some_and(|d| Some(d.as_path()) == audit.path.parent()) {
                    self.problem(
                        &join(&apath, "archive_dir"),
                        "must not be the directory of the audit file (the archive would mix with the live log)",
                    );
                }
            }
        }
        Some(GovernanceConfig { policies: policies?, audit })
    }

    pub(super) fn lineage(&mut self, root: &Value) -> Option<LineageConfig> {
        let value = root.get("lineage")?;
        let path = "lineage";
        let map = self.mapping(value, path, &["path", "url", "namespace"])?;
        let file = self.file_path(map, "path", path);
        let url = self.string(map, "url", path, false);
        let namespace = self.string(map, "namespace", path, false).unwrap_or_else(|| "agora".to_string());
        let sink = match (file, url) {
            (Some(file), None) => LineageSink::File(file),
            (None, Some(url)) => match url::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => LineageSink::Http(u),
                _ => {
                    self.problem(
                        &join(path, "url"),
                        format!("expected an http(s) URL such as http://127.0.0.1:5000/api/v1/lineage, found '{url}'"),
                    );
                    return None;
                }
            },
            (Some(_), Some(_)) => {
                self.problem(path, "give either path (a JSON Lines file) or url (an HTTP endpoint), not both");
                return None;
            }
            (None, None) => {
                if map.get("path").is_none() {
                    self.problem(path, "missing path (a JSON Lines file) or url (an HTTP endpoint)");
                }
                return None;
            }
        };
        Some(LineageConfig { sink, namespace })
    }

    pub(super) fn quality(&mut self, root: &Value) -> PathBuf {
        let default = self.base.join("quality/results.jsonl");
        let Some(value) = root.get("quality") else { return default };
        let Some(map) = self.mapping(value, "quality", &["results"]) else { return default };
        self.file_path(map, "results", "quality").unwrap_or(default)
    }

    pub(super) fn history(&mut self, root: &Value) -> HistoryConfig {
        let mut config = HistoryConfig { path: Some(self.base.join("history/queries.jsonl")), ..Default::default() };
        let Some(value) = root.get("history") else { return config };
        let keys = ["path", "keep", "max_file_bytes", "keep_files"];
        let Some(map) = self.mapping(value, "history", &keys) else { return config };
        if let Some(path) = self.file_path(map, "path", "history") {
            config.path = Some(path);
        }
        if let Some(keep) = self.positive(map, "keep", "history") {
            config.keep = usize::try_from(keep).unwrap_or(usize::MAX).min(1_000_000);
        }
        if let Some(bytes) = self.positive(map, "max_file_bytes", "history") {
            config.rotation.max_bytes = bytes;
        }
        if let Some(files) = self.positive(map, "keep_files", "history") {
            config.rotation.keep = files;
        }
        config
    }
}
