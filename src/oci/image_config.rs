//! The image config a build produces, in the shape BuildKit writes it: the OCI image config
//! with Docker's extensions (`Healthcheck`, `OnBuild`, `Shell`). Field order follows BuildKit's
//! Go structs; maps are sorted (`BTreeMap`), so the same build serializes to the same bytes.
//! Base image configs are read into the same types; unknown fields are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DiffId;

/// Go's `struct{}` in `ExposedPorts` and `Volumes`: serializes as `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Empty {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Healthcheck {
    #[serde(rename = "Test", default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContainerConfig {
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(rename = "ExposedPorts", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "StopSignal", default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(rename = "ArgsEscaped", default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    #[serde(rename = "Healthcheck", default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Vec::is_empty")]
    pub on_build: Vec<String>,
    #[serde(rename = "Shell", default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
}

impl ContainerConfig {
    pub(crate) fn env_get(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|entry| {
            let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
            (key == name).then_some(value)
        })
    }

    /// Sets `name=value`, replacing an earlier value in place (as Docker keeps the order).
    pub(crate) fn env_set(&mut self, name: &str, value: &str) {
        let entry = format!("{name}={value}");
        match self.env.iter_mut().find(|existing| existing.split_once('=').map(|(k, _)| k) == Some(name) || *existing == name) {
            Some(existing) => *existing = entry,
            None => self.env.push(entry),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<DiffId>,
}

/// The whole config document. Top-level keys are written sorted, as BuildKit's exporter
/// re-marshals the document through a map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageDocument {
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    pub os: String,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_serialize_with_docker_names_and_sorted_keys() {
        let mut document = ImageDocument { architecture: "amd64".into(), os: "linux".into(), ..Default::default() };
        document.config.env_set("PATH", "/bin");
        document.config.env_set("A", "1");
        document.config.env_set("PATH", "/usr/bin");
        document.config.exposed_ports.insert("80/tcp".into(), Empty {});
        document.rootfs.kind = "layers".into();
        let json = serde_json::to_string(&document).unwrap();
        assert_eq!(
            json,
            r#"{"architecture":"amd64","config":{"ExposedPorts":{"80/tcp":{}},"Env":["PATH=/usr/bin","A=1"]},"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
        );
        let parsed: ImageDocument = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, document);
    }
}
