//! Lowers a parsed Dockerfile to a build [`Graph`] and the image config of the target stage.
//!
//! Pure apart from the [`ImageResolver`] it is given: stages are resolved by name, index or
//! named context; only the stages the target needs are lowered (each once, on demand, so a
//! stage that is never used costs nothing and a cycle is reported); ARG/ENV scoping follows
//! `scope`; the image config and history follow BuildKit's dockerfile2llb. Every error carries
//! the span of its instruction, for the Dockerfile snippet.

mod copy;
mod dispatch;
mod go_format;
mod history;
mod run;
pub(crate) mod scope;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use crate::dockerfile::diagnostic::DockerfileError;
use crate::dockerfile::instruction::{Command, Located, commands};
use crate::dockerfile::shell::Lexer;
use crate::dockerfile::syntax::{Dockerfile, Span};
use crate::graph::{ContextSource, Graph, NetworkMode, Op, Origin, VertexId};
use crate::oci::Platform;
use crate::oci::image_config::ImageDocument;
use crate::ops::image::{ResolveError, ResolvedImage};

/// The name BuildKit gives the file of an http(s) named context.
pub(crate) const HTTP_CONTEXT_FILE: &str = "context";

/// A `--build-context name=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    Directory(PathBuf),
    /// `oci-layout://PATH[:tag|@digest]`: the selector is `:tag`, `@digest` or empty.
    OciLayout {
        path: PathBuf,
        selector: String,
    },
    /// `docker-image://REF`: an image from a registry, as written.
    DockerImage(String),
    /// An http(s) URL: as in BuildKit, the downloaded file itself, named `context`, never
    /// unpacked.
    Http(String),
}

/// Finds base images (resolved before lowering: the config shapes the stage). The frontend does
/// no I/O itself; `ops::image` resolves, and its error is shown with the instruction's span.
pub(crate) trait ImageResolver {
    fn resolve_layout(&self, path: &std::path::Path, selector: &str, platform: &Platform) -> Result<ResolvedImage, ResolveError>;
    fn resolve_reference(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, ResolveError>;
    /// The image of `--build-context CONTEXT=docker-image://REFERENCE` (its metadata shown as
    /// the context's, as BuildKit shows it).
    fn resolve_context_image(&self, context: &str, reference: &str, platform: &Platform) -> Result<ResolvedImage, ResolveError>;
}

pub(crate) struct FrontendOptions {
    pub dockerfile: Dockerfile,
    pub dockerfile_path: Option<PathBuf>,
    pub context_dir: PathBuf,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub named_contexts: BTreeMap<String, NamedContext>,
    pub platform: Platform,
    pub source_date_epoch: Option<i64>,
    pub labels: BTreeMap<String, String>,
    /// `--network`: the default of `RUN --network`.
    pub network: NetworkMode,
    /// `--add-host`: (name, address) for /etc/hosts of every RUN step.
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit`: (name, soft, hard) for every RUN step.
    pub ulimits: Vec<(String, u64, u64)>,
    /// `--shm-size`: bytes of /dev/shm in RUN steps.
    pub shm_size: Option<u64>,
    /// The `network.host` entitlement (`--allow network.host`, implied by `--network host`):
    /// without it `RUN --network=host` is refused, as BuildKit refuses it.
    pub allow_network_host: bool,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub graph: Graph,
    pub target: VertexId,
    pub image: ImageDocument,
    pub warnings: Vec<String>,
}

/// What a stage turned into.
#[derive(Debug, Clone)]
struct StageResult {
    vertex: VertexId,
    /// The image config without its history, which is in `history`.
    image: ImageDocument,
    history: history::HistoryChain,
    /// The ARGs in scope at the end, inherited by a stage built FROM this one.
    args: Vec<(String, Option<String>)>,
}

struct StageDefinition {
    /// Lower-case `AS` name.
    name: Option<String>,
    from: Located<Command>,
    commands: Vec<Located<Command>>,
}

pub(crate) struct Lowering<'a> {
    options: &'a FrontendOptions,
    resolver: &'a dyn ImageResolver,
    lexer: Lexer,
    graph: Graph,
    stages: Vec<StageDefinition>,
    results: HashMap<usize, StageResult>,
    in_progress: BTreeSet<usize>,
    global_args: Vec<(String, Option<String>)>,
    predefined: BTreeMap<String, String>,
    warnings: Vec<String>,
    /// Whether names get a stage prefix (more than one stage).
    multi_stage: bool,
}

pub(crate) fn lower(options: &FrontendOptions, resolver: &dyn ImageResolver) -> Result<Plan, DockerfileError> {
    let located = commands(&options.dockerfile)?;
    let lexer = Lexer::new(options.dockerfile.directives.escape);
    let mut globals = Vec::new();
    let mut stages: Vec<StageDefinition> = Vec::new();
    for command in located {
        match &command.value {
            Command::From { name, .. } => stages.push(StageDefinition { name: name.clone(), from: command.clone(), commands: Vec::new() }),
            _ => match stages.last_mut() {
                Some(stage) => stage.commands.push(command),
                None => globals.push(command),
            },
        }
    }
    if stages.is_empty() {
        return Err(DockerfileError::new("dockerfile contains no stages to build", None));
    }
    let predefined = scope::predefined_args(&options.platform, &Platform::host());
    let mut lowering = Lowering {
        options,
        resolver,
        lexer,
        graph: Graph::new(),
        multi_stage: stages.len() > 1,
        stages,
        results: HashMap::new(),
        in_progress: BTreeSet::new(),
        global_args: Vec::new(),
        predefined,
        warnings: Vec::new(),
    };
    lowering.global_args(&globals)?;
    let target_index = lowering.target_index()?;
    let result = lowering.stage(target_index)?;
    let mut image = result.image;
    image.history = result.history.flatten();
    for (key, value) in &options.labels {
        image.config.labels.insert(key.clone(), value.clone());
    }
    image.architecture = options.platform.architecture.clone();
    image.os = options.platform.os.clone();
    image.variant = options.platform.variant.clone();
    // Unused build args are ignored silently, as BuildKit does.
    Ok(Plan { graph: lowering.graph, target: result.vertex, image, warnings: lowering.warnings })
}

fn origin(span: Span) -> Option<Origin> {
    Some(Origin { start_line: span.start_line, end_line: span.end_line })
}

/// The stage names a user may give to `--target`, for the error listing them.
fn describe_stages(stages: &[StageDefinition]) -> String {
    let names: Vec<String> =
        stages.iter().enumerate().map(|(index, stage)| stage.name.clone().unwrap_or_else(|| format!("{index} (unnamed)"))).collect();
    names.join(", ")
}

impl Lowering<'_> {
    fn global_args(&mut self, globals: &[Located<Command>]) -> Result<(), DockerfileError> {
        for command in globals {
            let Command::Arg(pairs) = &command.value else {
                return Err(DockerfileError::at("no build stage in current context", command.span));
            };
            for (name, default) in pairs {
                let scope = self.global_scope();
                let value = self.arg_value(name, default.as_deref(), &scope, command.span)?;
                self.global_args.retain(|(key, _)| key != name);
                self.global_args.push((name.clone(), value));
            }
        }
        Ok(())
    }

    /// The value of `ARG name[=default]`, global or in a stage: a build arg wins, then the
    /// default (expanded in `scope`), then the global value, then the predefined one.
    fn arg_value(&self, name: &str, default: Option<&str>, scope: &scope::Scope, span: Span) -> Result<Option<String>, DockerfileError> {
        if let Some(value) = self.options.build_args.get(name) {
            return Ok(Some(value.clone()));
        }
        if let Some(default) = default {
            return scope.expand(&self.lexer, default).map(Some).map_err(|error| DockerfileError::at(error.message, span));
        }
        if let Some((_, value)) = self.global_args.iter().find(|(key, _)| key == name) {
            return Ok(value.clone());
        }
        Ok(self.predefined.get(name).cloned())
    }

    /// What FROM lines see: predefined platform ARGs and global ARGs.
    fn global_scope(&self) -> scope::Scope {
        let mut scope = scope::Scope::default();
        for (name, value) in &self.predefined {
            scope.set_arg(name, Some(value.clone()));
        }
        for (name, value) in &self.global_args {
            scope.set_arg(name, value.clone());
        }
        scope
    }

    fn target_index(&self) -> Result<usize, DockerfileError> {
        let Some(target) = &self.options.target else { return Ok(self.stages.len() - 1) };
        let wanted = target.to_lowercase();
        self.stages.iter().position(|stage| stage.name.as_deref() == Some(wanted.as_str())).ok_or_else(|| {
            DockerfileError::new(format!("target stage \"{target}\" could not be found (stages: {})", describe_stages(&self.stages)), None)
        })
    }

    fn stage_display_name(&self, index: usize) -> String {
        self.stages[index].name.clone().unwrap_or_else(|| format!("stage-{index}"))
    }

    /// A stage by the name or index a `FROM` or `COPY --from` uses, if it names one.
    /// `before` limits the search to earlier stages (FROM can only build on earlier stages).
    fn find_stage(&self, name: &str, before: Option<usize>) -> Option<usize> {
        let lower = name.to_lowercase();
        let limit = before.unwrap_or(self.stages.len());
        if let Some(index) = self.stages[..limit].iter().position(|stage| stage.name.as_deref() == Some(lower.as_str())) {
            return Some(index);
        }
        if before.is_none()
            && let Ok(index) = name.parse::<usize>()
            && index < self.stages.len()
        {
            return Some(index);
        }
        None
    }

    /// A `--build-context` matching an image or stage name, normalized as BuildKit does.
    fn named_context(&self, name: &str) -> Option<(&String, &NamedContext)> {
        let key = normalize_context_key(name);
        self.options.named_contexts.iter().find(|(context_name, _)| normalize_context_key(context_name) == key)
    }

    /// Lowers stage `index` (memoized).
    fn stage(&mut self, index: usize) -> Result<StageResult, DockerfileError> {
        if let Some(result) = self.results.get(&index) {
            return Ok(result.clone());
        }
        if !self.in_progress.insert(index) {
            let span = self.stages[index].from.span;
            return Err(DockerfileError::at(format!("circular dependency detected on stage: {}", self.stage_display_name(index)), span));
        }
        let result = dispatch::lower_stage(self, index)?;
        self.in_progress.remove(&index);
        self.results.insert(index, result.clone());
        Ok(result)
    }

    fn context_vertex(&mut self) -> VertexId {
        let source = ContextSource {
            name: "context".into(),
            dir: self.options.context_dir.clone(),
            dockerfile: self.options.dockerfile_path.clone(),
        };
        self.graph.add(Op::Context(source), vec![], "[internal] load build context", None, None)
    }

    fn scratch_vertex(&mut self) -> VertexId {
        self.graph.add(Op::Scratch, vec![], "", None, None)
    }
}

/// BuildKit's key for named contexts: the familiar name (Docker's normalisation, the one
/// reference parser) without `:latest`; a name that is no reference is its lowercase self.
fn normalize_context_key(name: &str) -> String {
    let name = name.to_lowercase();
    let familiar = crate::oci::Reference::parse(&name).map(|reference| reference.familiar_name()).unwrap_or(name);
    familiar.strip_suffix(":latest").map(String::from).unwrap_or(familiar)
}

#[cfg(test)]
mod tests {
    //! Frontend tests: Dockerfiles lowered with a fake resolver, checked as graph dumps (insta
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
            context_dir: PathBuf::from("/ctx"),
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
}
