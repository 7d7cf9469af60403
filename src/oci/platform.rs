//! Platforms (`os/arch[/variant]`): one type, one normaliser, one matcher, with containerd's
//! rules, so `--platform`, the `TARGET*` build arguments, index selection in a registry and in
//! an OCI layout agree.
//!
//! Normalising (containerd's `platforms.Normalize`, as BuildKit applies it to `--platform`):
//! lowercase; `x86_64`/`x86-64` are `amd64` (variant `v1` dropped), `aarch64` is `arm64`
//! (variant `v8` dropped), `armhf` is `arm/v7`, `armel` is `arm/v6`, `arm` without a variant is
//! `arm/v7`, `i386` is `386`. Checked with the oracle: `--platform linux/x86_64` gives
//! `TARGETPLATFORM=linux/amd64`, `TARGETARCH=amd64`; `linux/arm` gives `TARGETVARIANT=v7`.
//!
//! Matching (containerd's `platforms.Only`): the same OS and architecture after normalising; an
//! equal variant is best, and an arm request also takes older arm variants (v7 runs v6 and v5),
//! newest first.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    // Serialized in this order, as BuildKit writes a descriptor's platform.
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// A normalised platform.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize_architecture(architecture, variant);
        Platform { os: os.to_ascii_lowercase(), architecture, variant }
    }

    /// The machine rbuild runs on.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform::new("linux", architecture, None)
    }

    /// `os/arch[/variant]`, normalised; `None` for another shape.
    pub fn parse(text: &str) -> Option<Platform> {
        let mut parts = text.split('/');
        let os = parts.next().filter(|part| !part.is_empty())?;
        let architecture = parts.next().filter(|part| !part.is_empty())?;
        let variant = parts.next();
        if parts.next().is_some() || variant.is_some_and(str::is_empty) {
            return None;
        }
        Some(Platform::new(os, architecture, variant))
    }

    /// How well this (an index entry's platform) serves `wanted`: `Some(0)` exact, higher is
    /// worse, `None` no match.
    pub fn match_rank(&self, wanted: &Platform) -> Option<u32> {
        let have = Platform::new(&self.os, &self.architecture, self.variant.as_deref());
        let wanted = Platform::new(&wanted.os, &wanted.architecture, wanted.variant.as_deref());
        if have.os != wanted.os || have.architecture != wanted.architecture {
            return None;
        }
        if have.variant == wanted.variant {
            return Some(0);
        }
        if have.architecture == "arm" {
            let level = |variant: &Option<String>| variant.as_deref()?.strip_prefix('v')?.parse::<u32>().ok();
            if let (Some(wanted_level), Some(have_level)) = (level(&wanted.variant), level(&have.variant))
                && have_level < wanted_level
            {
                return Some(wanted_level - have_level);
            }
        }
        None
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(formatter, "/{variant}")?;
        }
        Ok(())
    }
}

/// containerd's architecture and variant normalisation (see the module docs).
fn normalize_architecture(architecture: &str, variant: Option<&str>) -> (String, Option<String>) {
    let variant = variant.map(str::to_ascii_lowercase).filter(|variant| !variant.is_empty());
    let architecture = architecture.to_ascii_lowercase();
    let (architecture, variant) = match architecture.as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64".to_string(), variant.filter(|variant| variant != "v1")),
        "aarch64" | "arm64" => ("arm64".to_string(), variant.filter(|variant| variant != "v8" && variant != "8")),
        "armhf" => ("arm".to_string(), Some("v7".to_string())),
        "armel" => ("arm".to_string(), Some("v6".to_string())),
        "arm" => (
            "arm".to_string(),
            Some(match variant.as_deref() {
                None | Some("7") => "v7".to_string(),
                Some(number @ ("5" | "6" | "8")) => format!("v{number}"),
                Some(other) => other.to_string(),
            }),
        ),
        "i386" | "386" => ("386".to_string(), variant),
        other => (other.to_string(), variant),
    };
    (architecture, variant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_normalise_as_buildkit_reports_them() {
        // TARGETPLATFORM as the oracle printed it for each --platform.
        for (given, reported) in [
            ("linux/x86_64", "linux/amd64"),
            ("linux/AMD64", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/riscv64", "linux/riscv64"),
        ] {
            assert_eq!(Platform::parse(given).unwrap().to_string(), reported, "{given}");
        }
        for bad in ["", "linux", "linux/", "/amd64", "linux/arm/v7/x", "linux/arm/"] {
            assert!(Platform::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn matching_follows_containerd() {
        let wanted = |text: &str| Platform::parse(text).unwrap();
        let entry = |os: &str, architecture: &str, variant: Option<&str>| Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        };
        assert_eq!(entry("linux", "x86_64", None).match_rank(&wanted("linux/amd64")), Some(0));
        assert_eq!(entry("linux", "arm64", Some("v8")).match_rank(&wanted("linux/arm64")), Some(0));
        assert_eq!(entry("linux", "arm", Some("v6")).match_rank(&wanted("linux/arm/v7")), Some(1));
        assert_eq!(entry("linux", "arm", Some("v7")).match_rank(&wanted("linux/arm/v6")), None);
        assert_eq!(entry("linux", "arm", None).match_rank(&wanted("linux/arm")), Some(0));
        assert_eq!(entry("windows", "amd64", None).match_rank(&wanted("linux/amd64")), None);
        assert_eq!(entry("unknown", "unknown", None).match_rank(&wanted("linux/amd64")), None);
    }
}
