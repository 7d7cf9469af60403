//! Mutation fuzzing of the parts that read hostile input (issue 9): the Dockerfile parser and
//! instruction reader, the word lexer, the `.dockerignore` matcher, and the layer tar reader.
//!
//! Each target starts from a seed corpus (the conformance Dockerfiles, BuildKit's lexer tables,
//! and `testdata/fuzz/<target>/`), mutates inputs (bit flips, inserted and deleted bytes, spliced
//! pieces, interesting tokens, repetition) and checks that the code under test returns instead
//! of panicking, and for the tar reader that nothing is written outside the extraction
//! directory. An input whose outcome (Ok, or the first words of its error) was not seen before
//! joins the in-memory corpus, so mutation reaches further into the grammar.
//!
//! `cargo test` runs every target for a few seconds. For a long run:
//!
//!     RBUILD_FUZZ_SECONDS=900 cargo test --release --test fuzz -- --test-threads 2
//!
//! `RBUILD_FUZZ_SEED` fixes the random seed; `RBUILD_FUZZ_SAVE=1` writes the novel inputs to
//! `testdata/fuzz/<target>/` (the kept corpus); `RBUILD_FUZZ_TRACE=1` writes each input to
//! `target/fuzz-current-<target>` before it runs (to catch one that never returns). A panicking input is written to
//! `target/fuzz-crashes/<target>-<hash>` and fails the test, naming that file.

#![allow(clippy::disallowed_methods)] // fixtures are written directly; the rule is for rbuild's own writes
#![allow(clippy::print_stderr)] // each fuzz target reports its runs and seed to the harness's stderr

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const MAX_INPUT: usize = 64 << 10;
const MAX_CORPUS: usize = 4096;
/// How many novel inputs one run adds to the kept corpus at most.
const MAX_SAVED: usize = 64;

/// Byte strings the grammars care about.
const TOKENS: &[&[u8]] = &[
    b"${",
    b"}",
    b"$",
    b":-",
    b":+",
    b"#",
    b"##",
    b"%",
    b"%%",
    b"/",
    b"//",
    b"\\",
    b"`",
    b"'",
    b"\"",
    b"\n",
    b"\r\n",
    b"\t",
    b" ",
    b"<<EOF\n",
    b"<<-EOF\n",
    b"\nEOF\n",
    b"<<'EOF'",
    b"*",
    b"**",
    b"?",
    b"[",
    b"]",
    b"!",
    b"..",
    b"./",
    b"/../",
    b"FROM ",
    b"RUN ",
    b"COPY ",
    b"ADD ",
    b"ARG ",
    b"ENV ",
    b"ONBUILD ",
    b"--mount=type=cache,target=/",
    b"--from=",
    b"--chmod=",
    b"AS ",
    b"# escape=`\n",
    b"# syntax=x\n",
    b"[\"",
    b"\", \"",
    b"\"]",
    b"\\\n",
    b"\xff",
    b"\xc3\xa9",
    b"\0",
];

/// xorshift64*: small, fast, reproducible from its seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 { 0 } else { (self.next() % bound as u64) as usize }
    }
}

fn mutate(input: &[u8], corpus: &[Vec<u8>], random: &mut Random) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + random.below(4) {
        let position = random.below(bytes.len() + 1);
        match random.below(8) {
            0 if !bytes.is_empty() => {
                let index = random.below(bytes.len());
                bytes[index] ^= 1 << random.below(8);
            }
            1 if !bytes.is_empty() => {
                let end = (position + 1 + random.below(16)).min(bytes.len());
                bytes.drain(position.min(end)..end);
            }
            2 => bytes.insert(position, random.next() as u8),
            3 | 4 => {
                let token = TOKENS[random.below(TOKENS.len())];
                bytes.splice(position..position, token.iter().copied());
            }
            5 => {
                let other = &corpus[random.below(corpus.len())];
                if !other.is_empty() {
                    let start = random.below(other.len());
                    let end = (start + 1 + random.below(256)).min(other.len());
                    bytes.splice(position..position, other[start..end].iter().copied());
                }
            }
            6 if !bytes.is_empty() => {
                let start = random.below(bytes.len());
                let end = (start + 1 + random.below(8)).min(bytes.len());
                let piece = bytes[start..end].to_vec();
                for _ in 0..random.below(64) {
                    bytes.splice(position..position, piece.iter().copied());
                }
            }
            _ => {
                let other = &corpus[random.below(corpus.len())];
                let cut = random.below(other.len() + 1);
                bytes.truncate(position);
                bytes.extend_from_slice(&other[cut..]);
            }
        }
    }
    bytes.truncate(MAX_INPUT);
    bytes
}

fn seconds() -> u64 {
    std::env::var("RBUILD_FUZZ_SECONDS").ok().and_then(|text| text.parse().ok()).unwrap_or(3)
}

fn seed() -> u64 {
    std::env::var("RBUILD_FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |time| time.as_nanos() as u64) | 1)
}

fn read_corpus(directory: &Path) -> Vec<Vec<u8>> {
    let mut inputs = Vec::new();
    if let Ok(entries) = fs::read_dir(directory) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).filter(|path| path.is_file()).collect();
        paths.sort();
        inputs.extend(paths.iter().filter_map(|path| fs::read(path).ok()));
    }
    inputs
}

fn short_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(bytes)[..8])
}

/// Runs `target` on mutated inputs for the configured time. `target` returns an outcome label
/// (novel labels grow the corpus) or panics.
fn fuzz(name: &str, mut corpus: Vec<Vec<u8>>, target: &dyn Fn(&[u8]) -> String) {
    corpus.extend(read_corpus(&Path::new(MANIFEST_DIR).join("testdata/fuzz").join(name)));
    assert!(!corpus.is_empty(), "{name}: no seed inputs");
    let seed = seed();
    let mut random = Random(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds());
    let mut outcomes = HashSet::new();
    let save = std::env::var_os("RBUILD_FUZZ_SAVE").is_some();
    let trace = std::env::var_os("RBUILD_FUZZ_TRACE").is_some();
    let mut saved = 0;
    let mut runs = 0u64;
    let mut slowest = Duration::ZERO;
    // Silence the default hook: panics are caught and reported here, with the input.
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < deadline {
        let parent = &corpus[random.below(corpus.len())];
        let input = mutate(parent, &corpus, &mut random);
        if trace {
            // The input being run, for finding one that never returns.
            fs::write(Path::new(MANIFEST_DIR).join(format!("target/fuzz-current-{name}")), &input).unwrap();
        }
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        slowest = slowest.max(started.elapsed());
        runs += 1;
        match outcome {
            Ok(label) => {
                if outcomes.insert(label) && corpus.len() < MAX_CORPUS {
                    if save && saved < MAX_SAVED {
                        saved += 1;
                        let directory = Path::new(MANIFEST_DIR).join("testdata/fuzz").join(name);
                        fs::create_dir_all(&directory).unwrap();
                        fs::write(directory.join(short_hash(&input)), &input).unwrap();
                    }
                    corpus.push(input);
                }
            }
            Err(panic) => {
                let _ = std::panic::take_hook();
                let directory = Path::new(MANIFEST_DIR).join("target/fuzz-crashes");
                fs::create_dir_all(&directory).unwrap();
                let path = directory.join(format!("{name}-{}", short_hash(&input)));
                fs::File::create(&path).and_then(|mut file| file.write_all(&input)).unwrap();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_default();
                panic!("{name}: panicked on {} (seed {seed}): {message}", path.display());
            }
        }
    }
    let _ = std::panic::take_hook();
    eprintln!("fuzz {name}: {runs} runs, {} outcomes, corpus {}, slowest {slowest:?}, seed {seed}", outcomes.len(), corpus.len());
    assert!(slowest < Duration::from_secs(5), "{name}: one input took {slowest:?}");
}

fn label<T, E: std::fmt::Display>(result: &Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(error) => {
            let text = error.to_string();
            // The kind of error, not its details: the first lowercase words of the reason after
            // the last `: `, before any quoted part (names, numbers and quotes vary).
            let reason = text.rsplit(": ").next().unwrap_or(&text);
            let before_quote = reason.split(['`', '"', '\'']).next().unwrap_or("");
            let words: Vec<&str> =
                before_quote.split_whitespace().filter(|word| word.chars().all(|c| c.is_ascii_lowercase())).take(4).collect();
            format!("error: {}", words.join(" "))
        }
    }
}

fn conformance_dockerfiles() -> Vec<Vec<u8>> {
    let root = Path::new(MANIFEST_DIR).join("testdata/conformance");
    let mut names: Vec<PathBuf> =
        fs::read_dir(&root).unwrap().flatten().map(|entry| entry.path().join("Dockerfile")).filter(|path| path.is_file()).collect();
    names.sort();
    names.iter().map(|path| fs::read(path).unwrap()).collect()
}

#[test]
fn dockerfile_parser() {
    fuzz("dockerfile", conformance_dockerfiles(), &|input| {
        let parsed = rbuild::dockerfile::syntax::parse("Dockerfile", input);
        match &parsed {
            Ok(dockerfile) => label(&rbuild::dockerfile::instruction::commands(dockerfile)),
            Err(_) => label(&parsed),
        }
    });
}

#[test]
fn word_lexer() {
    let mut seeds = Vec::new();
    for table in ["envVarTest", "wordsTest"] {
        let text = fs::read_to_string(Path::new(MANIFEST_DIR).join("testdata/buildkit-shell").join(table)).unwrap();
        for line in text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()) {
            let word = line.split('|').nth(1).unwrap_or(line).trim_end();
            seeds.push(word.as_bytes().to_vec());
        }
    }
    fuzz("lexer", seeds, &|input| {
        let text = String::from_utf8_lossy(input);
        let env = |name: &str| match name {
            "A" => Some("a b".to_string()),
            "EMPTY" => Some(String::new()),
            "PWD" => Some("/home".to_string()),
            _ => None,
        };
        let escape = if input.first() == Some(&b'`') { '`' } else { '\\' };
        let lexer = rbuild::dockerfile::shell::Lexer::new(escape);
        let word = lexer.process_word(&text, &env);
        let _ = lexer.process_words(&text, &env);
        let _ = lexer.process_heredoc(&text, &env);
        let _ = lexer.process_progress_name(&text, &env);
        label(&word)
    });
}

#[test]
fn dockerignore_matcher() {
    let seeds: Vec<Vec<u8>> = [
        "*.md\n!README.md\n",
        "**/node_modules\n**/*.tmp\n!keep/**\n",
        "/a/b/../c\n./d\n[a-c]?x\n\\!bang\n",
        "# comment\n  spaced  \n!\n**\n",
        "dir/\n*/*/x\n[!a]\n[\\]]\n",
    ]
    .iter()
    .map(|text| text.as_bytes().to_vec())
    .collect();
    let paths = ["a", "a/b", "README.md", "x.md", "node_modules/p/q", "keep/x.tmp", "dir", "dir/f", "c", "!bang", "]x", "a/b/c/d/e/f"];
    fuzz("dockerignore", seeds, &|input| {
        let text = String::from_utf8_lossy(input);
        let ignore = rbuild::context::dockerignore::DockerIgnore::parse(&text);
        if let Ok(ignore) = &ignore {
            for path in paths {
                let _ = ignore.is_excluded(path);
                let _ = ignore.may_include_below(path);
            }
            // Paths from the input itself, as a hostile context would name them.
            for line in text.lines().take(8) {
                let _ = ignore.is_excluded(line.trim_start_matches('!'));
            }
        }
        label(&ignore)
    });
}

/// A tar of `entries` (name, type, link target, data), written by hand so hostile names and
/// types go in unchanged.
fn tar_of(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut header = [0u8; 512];
        header[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = *kind;
        header[157..157 + link.len().min(100)].copy_from_slice(&link.as_bytes()[..link.len().min(100)]);
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|byte| u32::from(*byte)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn layer_tar_reader() {
    let seeds = vec![
        tar_of(&[("a/", b'5', "", b""), ("a/file", b'0', "", b"data"), ("a/link", b'2', "file", b"")]),
        tar_of(&[("x", b'0', "", b"1"), ("hard", b'1', "x", b""), (".wh.gone", b'0', "", b""), ("d/.wh..wh..opq", b'0', "", b"")]),
        tar_of(&[("../escape", b'0', "", b"out"), ("/abs", b'0', "", b"out"), ("l", b'2', "/", b""), ("l/through", b'0', "", b"x")]),
        tar_of(&[("up", b'2', "..", b""), ("up/x", b'0', "", b"y"), ("h", b'1', "../../etc/passwd", b""), ("dev", b'3', "", b"")]),
    ];
    let scratch = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicU64::new(0);
    fuzz("tar", seeds, &|input| {
        let parent = scratch.path().join(counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string());
        let target = parent.join("root");
        fs::create_dir_all(&target).unwrap();
        let options = rbuild::snapshot::extract::ExtractOptions {
            whiteouts: rbuild::snapshot::extract::WhiteoutMode::ToOverlay,
            ownership: rbuild::snapshot::extract::Ownership::BestEffort,
        };
        let result = rbuild::snapshot::extract::extract(input, &target, &options);
        // Nothing may appear beside the extraction directory.
        let beside: Vec<_> = fs::read_dir(&parent).unwrap().flatten().map(|entry| entry.file_name()).collect();
        assert_eq!(beside, [std::ffi::OsString::from("root")], "the archive wrote outside its directory");
        let _ = rbuild::store::remove_tree(&parent);
        label(&result)
    });
}
