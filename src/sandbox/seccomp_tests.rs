//! Tests of `seccomp.rs`: the profile against the one recorded from BuildKit.

use super::*;
use serde_json::Value;

const RECORDED: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/seccomp/buildkit-default-x86_64.json"));

/// One rule in a form both readings of a masked comparison agree on.
#[derive(Debug, PartialEq)]
struct Rule {
    names: Vec<String>,
    action: String,
    errno: Option<u64>,
    /// (index, operator, value, mask): `mask` only for a masked comparison.
    args: Vec<(u64, String, u64, Option<u64>)>,
}

/// `masked_value_is_mask`: runc's reading (BuildKit's spec), else libcontainer's.
fn rules(seccomp: &Value, masked_value_is_mask: bool) -> Vec<Rule> {
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    seccomp["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .map(|rule| Rule {
            names: rule["names"].as_array().unwrap().iter().map(|name| name.as_str().unwrap().to_string()).collect(),
            action: rule["action"].as_str().unwrap().to_string(),
            errno: rule["errnoRet"].as_u64(),
            args: rule["args"]
                .as_array()
                .map(|args| {
                    args.iter()
                        .map(|arg| {
                            let op = arg["op"].as_str().unwrap().to_string();
                            let (value, two) = (number(&arg["value"]), number(&arg["valueTwo"]));
                            if op == "SCMP_CMP_MASKED_EQ" {
                                let (mask, expected) = if masked_value_is_mask { (value, two) } else { (two, value) };
                                (number(&arg["index"]), op, expected, Some(mask))
                            } else {
                                (number(&arg["index"]), op, value, None)
                            }
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_profile_is_buildkits() {
    let recorded: Value = serde_json::from_str(RECORDED).unwrap();
    let ours = serde_json::to_value(profile().unwrap()).unwrap();
    let recorded_seccomp = &recorded["seccomp"];
    for key in ["defaultAction", "defaultErrnoRet", "architectures"] {
        assert_eq!(ours[key], recorded_seccomp[key], "{key}");
    }
    assert_eq!(rules(&ours, false), rules(recorded_seccomp, true));
    // The profile was recorded for BuildKit's capabilities, which are rbuild's.
    let capabilities: Vec<String> = super::super::spec::DEFAULT_CAPABILITIES
        .iter()
        .map(|capability| format!("CAP_{}", capability.to_string().to_uppercase()))
        .collect();
    assert_eq!(recorded["capabilities"], serde_json::json!(capabilities));
}

/// The clone rule keeps namespaces out and lets fork through, in libcontainer's reading.
#[test]
fn clone_may_not_create_namespaces() {
    let ours = serde_json::to_value(profile().unwrap()).unwrap();
    let clone = rules(&ours, false).into_iter().find(|rule| rule.names == ["clone"]).unwrap();
    let (_, _, expected, mask) = clone.args[0].clone();
    let allowed = |flags: u64| flags & mask.unwrap() == expected;
    assert!(allowed(libc::SIGCHLD as u64));
    assert!(allowed((libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64));
    for namespace in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET, libc::CLONE_NEWPID, libc::CLONE_NEWCGROUP] {
        assert!(!allowed((namespace | libc::SIGCHLD) as u64), "{namespace:#x}");
    }
}
