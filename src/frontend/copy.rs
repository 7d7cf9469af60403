//! Lowers `COPY` and `ADD` (local sources and heredocs) to a file op.
//!
//! Words are expanded in the stage's scope; a relative destination is joined to WORKDIR with its
//! trailing `/` kept; `--from` names a stage, a named context or an image; heredoc sources
//! become files written by the op; `--link` copies onto an empty base and stacks the result on
//! the stage with a merge, so the layer does not depend on what is below it. A URL source
//! (http or git, see [`super::git_url`]) becomes a source vertex of its own, copied from.

use super::dispatch::{StageState, parse_owner, uppercase_first_word};
use super::{Lowering, NamedContext, origin};
use crate::dockerfile::diagnostic::DockerfileError;
use crate::dockerfile::instruction::{Command, CopyCommand, Located};
use crate::dockerfile::syntax::{Span, heredoc_name};
use crate::graph::{Chmod, ContextSource, CopyAction, FileAction, GitSource, HttpSource, MkfileAction, Op, VertexId};

pub(super) fn lower_copy(
    lowering: &mut Lowering,
    state: &mut StageState,
    located: &Located<Command>,
    copy: &CopyCommand,
    is_add: bool,
) -> Result<(), DockerfileError> {
    let span = located.span;
    let keyword = if is_add { "ADD" } else { "COPY" };
    let expand = |state: &StageState, word: &str| -> Result<String, DockerfileError> {
        state.scope.expand(&lowering.lexer, word).map_err(|error| DockerfileError::at(error.message, span))
    };
    let epoch = lowering.options.source_date_epoch;

    let mut sources = Vec::new();
    let mut urls = Vec::new();
    let mut repositories = Vec::new();
    // Every source word after expansion, in order, for the history.
    let mut shown_sources = Vec::new();
    let mut heredocs = Vec::new();
    for word in &copy.sources {
        if let Some(name) = heredoc_name(word) {
            let Some(heredoc) = copy.heredocs.iter().find(|heredoc| heredoc.name == name) else {
                return Err(DockerfileError::at(format!("heredoc `{name}` has no body"), span));
            };
            let body = if heredoc.expand {
                state.scope.expand_heredoc(&lowering.lexer, &heredoc.body).map_err(|error| DockerfileError::at(error.message, span))?
            } else {
                heredoc.body.clone()
            };
            heredocs.push((name, body));
            continue;
        }
        let source = expand(state, word)?;
        shown_sources.push(source.clone());
        if is_add && let Some(repository) = super::git_url::parse(&source) {
            repositories.push(repository.map_err(|error| DockerfileError::at(format!("failed to parse URL fragment: {error}"), span))?);
            continue;
        }
        if is_add && is_http(&source) {
            urls.push(source);
            continue;
        }
        sources.push(source);
    }
    let checksum = copy.checksum.as_ref().map(|checksum| expand(state, checksum)).transpose()?;
    if let Some(checksum) = &checksum {
        if !sources.is_empty() {
            return Err(DockerfileError::at("checksum requires HTTP(S) or Git sources", span));
        }
        // A git source's checksum is a commit id (or its start), an http source's a digest.
        if repositories.is_empty()
            && let Some(problem) = crate::oci::descriptor::digest_problem(checksum)
        {
            return Err(DockerfileError::at(problem, span));
        }
    }
    let dest_word = expand(state, &copy.dest)?;
    let dest = destination(&dest_word, &state.image.config.working_dir);
    let chown_word = copy.chown.as_ref().map(|chown| expand(state, chown)).transpose()?;
    // An empty `--chown` (after expansion) is no chown at all, as BuildKit's `parseUser("")`.
    let owner = chown_word.as_deref().filter(|word| !word.is_empty()).map(parse_owner);
    let chmod_word = copy.chmod.as_ref().map(|chmod| expand(state, chmod)).transpose()?;
    let chmod = match &chmod_word {
        Some(text) => Some(Chmod::parse(text).map_err(|error| DockerfileError::at(error.to_string(), span))?),
        None => None,
    };
    let mut excludes = Vec::new();
    for exclude in &copy.excludes {
        excludes.push(expand(state, exclude)?);
    }

    // Where the sources come from.
    let source_vertex = match &copy.from {
        None => (!sources.is_empty()).then(|| lowering.context_vertex()),
        // BuildKit resolves `--from` before any variable is known, and says so.
        Some(from) if from.contains('$') => {
            return Err(DockerfileError::at(
                "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                span,
            ));
        }
        Some(from) => Some(source_from(lowering, state, from, span)?),
    };

    let mut actions = Vec::new();
    for (name, body) in &heredocs {
        let path = if dest.ends_with('/') { format!("{dest}{name}") } else { dest.clone() };
        actions.push(FileAction::Mkfile(MkfileAction {
            path,
            data: body.clone().into_bytes(),
            mode: 0o644,
            owner: owner.clone(),
            chmod: chmod.clone(),
            timestamp: epoch,
        }));
    }
    let mut inputs = vec![if copy.link { lowering.scratch_vertex() } else { state.vertex }];
    inputs.extend(source_vertex);
    if !sources.is_empty() {
        actions.push(FileAction::Copy(CopyAction {
            source_input: 1,
            sources: sources.clone(),
            dest: dest.clone(),
            owner: owner.clone(),
            chmod: chmod.clone(),
            excludes,
            parents: copy.parents,
            unpack: is_add && copy.unpack != Some(false),
            timestamp: epoch,
        }));
    }
    let original = located.original.trim();
    let shown = state.scope.progress_name(&lowering.lexer, original);
    let name = state.step_name(&uppercase_first_word(&shown));
    let stage = Some(state.stage_name.clone());
    // A URL is an http source of its own (shown under the step's name, as BuildKit shows it),
    // copied like a file of a stage: only `--unpack=true` unpacks it.
    for url in &urls {
        let filename = url_file_name(url);
        let source = HttpSource { url: url.clone(), filename: filename.clone(), checksum: checksum.clone() };
        inputs.push(lowering.graph.add(Op::Http(source), vec![], name.clone(), origin(span), stage.clone()));
        actions.push(FileAction::Copy(CopyAction {
            source_input: inputs.len() - 1,
            sources: vec![format!("/{}", escape_wildcards(&filename))],
            dest: dest.clone(),
            owner: owner.clone(),
            chmod: chmod.clone(),
            excludes: Vec::new(),
            parents: false,
            unpack: copy.unpack == Some(true),
            timestamp: epoch,
        }));
    }
    // A git source's files are copied as a directory's contents, as BuildKit copies its `/`.
    for repository in &repositories {
        let source = GitSource {
            remote: repository.remote.clone(),
            reference: repository.reference.clone(),
            subdir: repository.subdir.clone(),
            keep_git_dir: copy.keep_git_dir == Some(true),
            checksum: checksum.clone(),
            timestamp: epoch,
        };
        inputs.push(lowering.graph.add(Op::Git(source), vec![], name.clone(), origin(span), stage.clone()));
        actions.push(FileAction::Copy(CopyAction {
            source_input: inputs.len() - 1,
            sources: vec!["/".to_string()],
            dest: dest.clone(),
            owner: owner.clone(),
            chmod: chmod.clone(),
            excludes: Vec::new(),
            parents: false,
            unpack: false,
            timestamp: epoch,
        }));
    }

    let base = state.vertex;
    let op = Op::File { actions };
    let copied = lowering.graph.add(op, inputs, name.clone(), origin(span), stage.clone());
    state.vertex = if copy.link { lowering.graph.add(Op::Merge, vec![base, copied], "", origin(span), stage) } else { copied };

    // History shows the words after expansion, as BuildKit records them (the destination as
    // written, not joined to WORKDIR; `--exclude` and `--link` left out).
    let mut created_by = String::from(keyword);
    if copy.parents {
        created_by.push_str(" --parents");
    }
    if let Some(chown) = &chown_word {
        created_by.push_str(&format!(" --chown={chown}"));
    }
    if let Some(chmod) = &chmod_word {
        created_by.push_str(&format!(" --chmod={chmod}"));
    }
    for source in &shown_sources {
        created_by.push_str(&format!(" {source}"));
    }
    for (name, _) in &heredocs {
        created_by.push_str(&format!(" <<{name}"));
    }
    created_by.push_str(&format!(" {dest_word} # buildkit"));
    state.commit(created_by, true, epoch);
    Ok(())
}

fn is_http(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// The name a URL's file gets, as BuildKit names it: the last component of the URL's path
/// (decoded), `__unnamed__` when there is none. `.` and `..` (which a URL's path cannot hold once
/// parsed) are `__unnamed__` too, so the name is always one plain component.
fn url_file_name(url: &str) -> String {
    let path = url.split_once("://").map_or("", |(_, rest)| rest);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.find('/').map_or("", |slash| &path[slash..]);
    let decoded = percent_decode(path);
    let base = decoded.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    if base.is_empty() || base == "." || base == ".." || base.contains('\0') { "__unnamed__".to_string() } else { base.to_string() }
}

/// `%XX` escapes decoded (invalid ones kept as written), as Go's `url.URL.Path` holds the path.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A file name as a copy source pattern that matches only itself.
fn escape_wildcards(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for character in name.chars() {
        if matches!(character, '*' | '?' | '[' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Joins a relative destination to WORKDIR, keeping a trailing `/` (it means "into").
fn destination(dest: &str, working_dir: &str) -> String {
    let trailing = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        let base = if working_dir.is_empty() { "/" } else { working_dir };
        format!("{}/{dest}", base.trim_end_matches('/'))
    };
    let mut cleaned = crate::oci::path::clean_absolute(&joined);
    if trailing && !cleaned.ends_with('/') {
        cleaned.push('/');
    }
    cleaned
}

/// The vertex a `--from` names: a stage, a named context, or an image.
pub(super) fn source_from(lowering: &mut Lowering, state: &StageState, from: &str, span: Span) -> Result<VertexId, DockerfileError> {
    if let Some(index) = lowering.find_stage(from, None) {
        if index == state.index {
            return Err(DockerfileError::at(format!("COPY --from of the stage itself (`{from}`)"), span));
        }
        return Ok(lowering.stage(index)?.vertex);
    }
    if let Some((name, context)) = lowering.named_context(from).map(|(n, c)| (n.clone(), c.clone())) {
        return match context {
            NamedContext::Directory(dir) => Ok(lowering.graph.add(
                Op::Context(ContextSource { name: name.clone(), dir, dockerfile: None }),
                vec![],
                format!("[context {name}] load from client"),
                None,
                None,
            )),
            NamedContext::Http(url) => {
                let source = HttpSource { url: url.clone(), filename: super::HTTP_CONTEXT_FILE.into(), checksum: None };
                Ok(lowering.graph.add(Op::Http(source), vec![], format!("[context {name}] {url}"), None, None))
            }
            NamedContext::Git(url) => git_context_vertex(lowering, &url, span),
            NamedContext::DockerImage(reference) => {
                let resolved = lowering
                    .resolver
                    .resolve_context_image(&name, &reference, &lowering.options.platform)
                    .map_err(|error| DockerfileError::at(error.to_string(), span))?;
                Ok(lowering.graph.add(Op::Image(resolved.source), vec![], format!("[context {name}] {reference}"), None, None))
            }
            NamedContext::OciLayout { path, selector } => {
                let resolved = lowering
                    .resolver
                    .resolve_layout(&path, &selector, &lowering.options.platform)
                    .map_err(|error| DockerfileError::at(error.to_string(), span))?;
                Ok(lowering.graph.add(Op::Image(resolved.source), vec![], format!("[context {name}] {}", resolved.display), None, None))
            }
        };
    }
    let resolved = lowering
        .resolver
        .resolve_reference(from, &lowering.options.platform)
        .map_err(|error| DockerfileError::at(error.to_string(), span))?;
    Ok(lowering.graph.add(Op::Image(resolved.source), vec![], format!("FROM {}", resolved.display), None, None))
}

/// The vertex of a `--build-context NAME=GIT-URL`: the commit's files (no `.git`), named as
/// BuildKit names it (`[internal] load git source URL`).
pub(super) fn git_context_vertex(lowering: &mut Lowering, url: &str, span: Span) -> Result<VertexId, DockerfileError> {
    let source =
        super::git_context_source(url, lowering.options.source_date_epoch).map_err(|message| DockerfileError::at(message, span))?;
    Ok(lowering.graph.add(Op::Git(source), vec![], format!("[internal] load git source {url}"), None, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_files_are_named_as_buildkit_names_them() {
        for (url, name) in [
            ("http://h/dir/file.txt", "file.txt"),
            ("http://h/dir/file.txt?x=1&y=2", "file.txt"),
            ("https://h:8443/a/b/", "b"),
            ("http://h/", "__unnamed__"),
            ("http://h", "__unnamed__"),
            ("http://h/a%20b.tar.gz#frag", "a b.tar.gz"),
            ("http://h/a%2Fb", "b"),
            ("http://h/a/..", "__unnamed__"),
        ] {
            assert_eq!(url_file_name(url), name, "{url}");
        }
        assert_eq!(escape_wildcards("f[1]*?.txt"), "f\\[1]\\*\\?.txt");
    }

    #[test]
    fn destinations_join_workdir_and_keep_the_slash() {
        assert_eq!(destination("app/", "/srv"), "/srv/app/");
        assert_eq!(destination(".", "/srv"), "/srv/");
        assert_eq!(destination("file", "/"), "/file");
        assert_eq!(destination("/abs/../x", "/srv"), "/x");
        assert_eq!(destination("sub/file", ""), "/sub/file");
    }
}
