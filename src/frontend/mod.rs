//! Lowers a parsed Dockerfile to a build [`Graph`] and the image config of the target stage.
//!
//! Pure apart from the [`ImageResolver`] it is given: stages are resolved by name, index or
//! named context; only the stages the target needs are lowered (each once, on demand, so a
//! stage that is never used costs nothing and a cycle is reported); ARG/ENV scoping follows
//! `scope`; the image config and history follow BuildKit's dockerfile2llb. Every error carries
//! the span of its instruction, for the Dockerfile snippet.

mod copy;
mod dispatch;
mod git_url;
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
use crate::graph::{ContextSource, GitSource, Graph, NetworkMode, Op, Origin, VertexId};
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
    /// A git repository (`URL#REF:SUBDIR`): the commit's files, as `ADD` takes them.
    Git(String),
}

/// The build's context (the PATH argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MainContext {
    /// A local directory (also an unpacked archive from stdin or a URL), loaded with its
    /// `.dockerignore`.
    Directory(PathBuf),
    /// A git repository (`URL#REF:SUBDIR`): the commit's files, as a `--build-context` of git
    /// gives them. BuildKit applies no `.dockerignore` to it (measured with the oracle: an
    /// ignored file is copied), and neither does rbuild.
    Git { url: String, source: GitSource },
}

/// The source of a git URL given as a context (`--build-context NAME=URL`, or the PATH
/// argument): the commit's files without `.git`, stamped with SOURCE_DATE_EPOCH when given.
pub(crate) fn git_context_source(url: &str, source_date_epoch: Option<i64>) -> Result<GitSource, String> {
    let repository = match git_url::parse(url) {
        Some(Ok(repository)) => repository,
        Some(Err(message)) => return Err(message),
        None => return Err(format!("`{url}` is no git repository")),
    };
    Ok(GitSource {
        remote: repository.remote,
        reference: repository.reference,
        subdir: repository.subdir,
        keep_git_dir: false,
        checksum: None,
        timestamp: source_date_epoch,
    })
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
    pub context: MainContext,
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
        match &self.options.context {
            MainContext::Directory(dir) => {
                let source = ContextSource { name: "context".into(), dir: dir.clone(), dockerfile: self.options.dockerfile_path.clone() };
                self.graph.add(Op::Context(source), vec![], "[internal] load build context", None, None)
            }
            MainContext::Git { url, source } => {
                let name = format!("[internal] load git source {url}");
                self.graph.add(Op::Git(source.clone()), vec![], name, None, None)
            }
        }
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
mod tests;
