//! Tests of `frontend/mod.rs`: Dockerfiles lowered with a fake resolver, checked as graph dumps (insta
//! snapshots under `snapshots/`) and image configs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::dockerfile::syntax::parse;
use crate::graph::ImageSource;
use crate::oci::{Digest, image_config::History};
use crate::ops::image::MetadataError;

/// Resolves every layout and reference to a fixed image with `ENV BASE=1` and an ONBUILD.
struct FakeResolver;

fn fake_image(name: &str) -> ResolvedImage {
    let mut config = ImageDocument::default();
    config.config.env = vec!["PATH=/bin".into(), "BASE=1".into()];
    config.config.working_dir = "/base".into();
    config.config.on_build = vec!["LABEL from.trigger=yes".into()];
    config.history = vec![History { created_by: Some("base layer".into()), ..Default::default() }];
    ResolvedImage {
        source: ImageSource::OciLayout {
            path: PathBuf::from("/layouts/base"),
            manifest_digest: Digest::sha256_of(name.as_bytes()),
            reference: name.into(),
        },
        display: format!("{name}@{}", Digest::sha256_of(name.as_bytes())),
        config,
    }
}

impl ImageResolver for FakeResolver {
    fn resolve_layout(&self, path: &Path, selector: &str, _platform: &Platform) -> Result<ResolvedImage, ResolveError> {
        Ok(fake_image(&format!("oci-layout://{}{selector}", path.display())))
    }

    fn resolve_reference(&self, reference: &str, _platform: &Platform) -> Result<ResolvedImage, ResolveError> {
        Err(ResolveError::Metadata { name: reference.into(), cause: MetadataError::NoRegistry })
    }

    fn resolve_context_image(&self, _context: &str, reference: &str, _platform: &Platform) -> Result<ResolvedImage, ResolveError> {
        Ok(fake_image(&format!("docker-image://{reference}")))
    }
}

fn options(dockerfile: &str) -> FrontendOptions {
    FrontendOptions {
        dockerfile: parse("Dockerfile", dockerfile.as_bytes()).expect("test Dockerfile parses"),
        dockerfile_path: None,
        context: MainContext::Directory(PathBuf::from("/ctx")),
        target: None,
        build_args: BTreeMap::new(),
        named_contexts: BTreeMap::new(),
        platform: Platform { os: "linux".into(), architecture: "amd64".into(), variant: None },
        source_date_epoch: None,
        labels: BTreeMap::new(),
        network: crate::graph::NetworkMode::Default,
        extra_hosts: Vec::new(),
        ulimits: Vec::new(),
        shm_size: None,
        allow_network_host: false,
    }
}

fn lower_ok(options: &FrontendOptions) -> Plan {
    match lower(options, &FakeResolver) {
        Ok(plan) => plan,
        Err(error) => panic!("lowering failed: {} at {:?}", error.message, error.span),
    }
}

fn history(plan: &Plan) -> Vec<String> {
    plan.image
        .history
        .iter()
        .map(|entry| format!("{}{}", entry.created_by.clone().unwrap_or_default(), if entry.empty_layer { " (empty)" } else { "" }))
        .collect()
}

#[test]
fn unused_stages_are_not_lowered() {
    let plan = lower_ok(&options(
        "FROM scratch AS unused\nCOPY never /never\n\
         FROM scratch AS build\nWORKDIR /src\nCOPY a.txt ./\n\
         FROM scratch\nCOPY --from=build /src /app\n",
    ));
    let dump = plan.graph.dump(&[plan.target]);
    assert!(!dump.contains("never"), "{dump}");
    insta::assert_snapshot!(dump);
}

#[test]
fn args_env_and_build_args_expand_as_buildkit_does() {
    let mut options = options(
        "ARG TAG=1\nARG UNUSED\nFROM scratch\nARG TAG\nARG V=${TAG}-x\nENV V=env-${V} W=$V\nARG V=again\n\
         LABEL v=$V tag=$TAG target=${TARGETARCH:-none}\nARG TARGETARCH\nLABEL arch=$TARGETARCH\n",
    );
    options.build_args.insert("TAG".into(), "2".into());
    let plan = lower_ok(&options);
    // ENV wins over an ARG of the same name, even one declared after it.
    assert_eq!(plan.image.config.labels["v"], "env-2-x");
    assert_eq!(plan.image.config.labels["tag"], "2");
    assert_eq!(plan.image.config.labels["target"], "none", "predefined ARGs need a declaration in a stage");
    assert_eq!(plan.image.config.labels["arch"], "amd64");
    assert_eq!(plan.image.config.env, ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "V=env-2-x", "W=2-x"]);
    insta::assert_snapshot!(history(&plan).join("\n"));
}

#[test]
fn image_config_follows_each_instruction() {
    let plan = lower_ok(&options(
        "FROM scratch\nUSER app\nWORKDIR rel\nWORKDIR sub\nEXPOSE 80 53/udp\nVOLUME /data\nSTOPSIGNAL SIGTERM\n\
         SHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\nENTRYPOINT [\"/init\"]\n\
         HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost/\nMAINTAINER me\nONBUILD COPY a /a\n",
    ));
    insta::assert_json_snapshot!(plan.image);
    insta::assert_snapshot!(plan.graph.dump(&[plan.target]));
}

#[test]
fn entrypoint_drops_an_inherited_cmd_only() {
    let plan = lower_ok(&options("FROM scratch AS base\nCMD [\"a\"]\nFROM base\nENTRYPOINT [\"e\"]\n"));
    assert_eq!(plan.image.config.cmd, None);
    let plan = lower_ok(&options("FROM scratch\nCMD [\"a\"]\nENTRYPOINT [\"e\"]\n"));
    assert_eq!(plan.image.config.cmd, Some(vec!["a".to_string()]));
}

#[test]
fn onbuild_triggers_run_in_the_child_and_are_cleared() {
    let plan = lower_ok(&options("FROM scratch AS parent\nONBUILD LABEL x=1\nFROM parent\nLABEL y=2\n"));
    assert_eq!(plan.image.config.labels.get("x").map(String::as_str), Some("1"));
    assert!(plan.image.config.on_build.is_empty());
}

#[test]
fn named_layout_contexts_replace_images_and_give_their_config() {
    let mut options = options("FROM busybox\nRUN_NOT_HERE=1\n".replace("RUN_NOT_HERE=1\n", "COPY --link a /a\n").as_str());
    options.named_contexts.insert(
        "docker.io/library/busybox:latest".into(),
        NamedContext::OciLayout { path: PathBuf::from("/layouts/busybox"), selector: ":1".into() },
    );
    let plan = lower_ok(&options);
    assert_eq!(plan.image.config.env_get("BASE"), Some("1"));
    assert_eq!(plan.image.config.labels.get("from.trigger").map(String::as_str), Some("yes"), "the base's ONBUILD ran");
    assert_eq!(plan.image.config.working_dir, "/base");
    let dump = plan.graph.dump(&[plan.target]);
    insta::assert_snapshot!(dump);
}

/// `docker-image://` contexts, as BuildKit names them: `[context NAME] REFERENCE` for the
/// image, the stage's steps numbered after it without a number of its own.
#[test]
fn docker_image_contexts_are_images_named_after_the_context() {
    let mut options = options("FROM base AS b\nRUN true\nFROM scratch\nCOPY --from=other /a /a\n");
    options.named_contexts.insert("base".into(), NamedContext::DockerImage("busybox".into()));
    options.named_contexts.insert("other".into(), NamedContext::DockerImage("docker.io/library/busybox:1".into()));
    options.target = Some("b".into());
    let plan = lower_ok(&options);
    assert_eq!(plan.image.config.env_get("BASE"), Some("1"));
    let names: Vec<&str> = plan.graph.vertices.iter().map(|vertex| vertex.name.as_str()).collect();
    assert!(names.contains(&"[context base] busybox"), "{names:?}");
    assert!(names.contains(&"[b 1/3] RUN true"), "{names:?}");
    options.target = None;
    let plan = lower_ok(&options);
    let names: Vec<&str> = plan.graph.vertices.iter().map(|vertex| vertex.name.as_str()).collect();
    assert!(names.contains(&"[context other] docker.io/library/busybox:1"), "{names:?}");
}

#[test]
fn errors_name_the_line() {
    let error = |text: &str, target: Option<&str>| {
        let mut options = options(text);
        options.target = target.map(String::from);
        lower(&options, &FakeResolver).expect_err("lowering should fail")
    };
    let unknown_target = error("FROM scratch AS a\nFROM scratch AS b\n", Some("c"));
    assert_eq!(unknown_target.message, "target stage \"c\" could not be found (stages: a, b)");
    let cycle = error("FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\nCOPY --from=a / /\n", None);
    assert!(cycle.message.starts_with("circular dependency detected on stage"), "{}", cycle.message);
    let required = error("FROM scratch\nARG X\nLABEL x=\"${X:?is required}\"\n", None);
    assert_eq!(required.span.map(|span| span.start_line), Some(3));
    assert!(required.message.contains("X: is required"), "{}", required.message);
    let registry = error("FROM alpine\n", None);
    assert!(registry.message.contains("no registry"), "{}", registry.message);
}

#[test]
fn context_keys_normalize_like_buildkit() {
    for name in ["busybox", "busybox:latest", "docker.io/library/busybox", "docker.io/library/busybox:latest", "library/busybox"] {
        assert_eq!(normalize_context_key(name), "busybox", "{name}");
    }
    assert_eq!(normalize_context_key("busybox:1.36"), "busybox:1.36");
    assert_eq!(normalize_context_key("ghcr.io/x/y"), "ghcr.io/x/y");
}

#[test]
fn run_lowers_to_an_exec_op() {
    let mut options = options(
        "FROM scratch\nARG V=1\nENV E=2\nWORKDIR /w\nUSER app\nRUN echo $V\nSHELL [\"/bin/bash\", \"-c\"]\n\
         RUN --network=none --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=/t,size=1m <<EOF\nls\nEOF\n\
         RUN [\"/bin/true\", \"x\"]\n",
    );
    options.build_args.insert("http_proxy".into(), "http://proxy".into());
    let plan = lower_ok(&options);
    insta::assert_snapshot!(plan.graph.dump(&[plan.target]));
    insta::assert_snapshot!(history(&plan).join("\n"));
}
