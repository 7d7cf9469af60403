//! Tests of `plain.rs`, kept apart so the module itself stays readable.

use super::super::test_support::SharedBuffer;
use super::super::{Stream, VertexId};
use super::*;

/// Runs `script` (milliseconds since the start, event) through a plain printer and returns
/// everything it wrote, summary included.
fn render(script: Vec<(u64, Event)>) -> String {
    let buffer = SharedBuffer::default();
    let mut printer = PlainPrinter::new(Box::new(buffer.clone()));
    let start = Duration::from_secs(1_700_000_000);
    let mut last = start;
    for (millis, event) in script {
        last = start + Duration::from_millis(millis);
        printer.event(event, last).unwrap();
    }
    printer.finish(last, true).unwrap();
    buffer.text()
}

fn started(vertex: VertexId, name: &str) -> Event {
    Event::Started { vertex, name: name.to_owned() }
}

fn log(vertex: VertexId, text: &str) -> Event {
    Event::Log { vertex, stream: Stream::Stdout, bytes: text.as_bytes().to_vec() }
}

fn finished(vertex: VertexId) -> Event {
    Event::Finished { vertex }
}

fn cached(vertex: VertexId, name: &str) -> Event {
    Event::Cached { vertex, name: name.to_owned() }
}

fn failed(vertex: VertexId, error: &str) -> Event {
    Event::Failed { vertex, error: error.to_owned() }
}

fn warning(message: &str) -> Event {
    Event::Warning { message: message.to_owned() }
}

fn status(vertex: VertexId, id: &str, current: u64, total: Option<u64>, done: bool) -> Event {
    Event::Status { vertex, id: id.to_owned(), current, total, done }
}

#[test]
fn a_simple_build_prints_blocks_separated_by_blank_lines() {
    let output = render(vec![
        (0, started(10, "[internal] load build definition from Dockerfile")),
        (0, status(10, "transferring dockerfile:", 92, None, true)),
        (20, finished(10)),
        (30, cached(11, "[1/2] FROM docker.io/library/alpine:3.20")),
        (40, started(12, "[2/2] RUN echo hi")),
        (352, log(12, "hi\n")),
        (400, finished(12)),
    ]);
    assert_eq!(
        output,
        "#1 [internal] load build definition from Dockerfile\n\
         #1 transferring dockerfile: 92B done\n\
         #1 DONE 0.0s\n\
         \n\
         #2 [1/2] FROM docker.io/library/alpine:3.20\n\
         #2 CACHED\n\
         \n\
         #3 [2/2] RUN echo hi\n\
         #3 0.312 hi\n\
         #3 DONE 0.4s\n"
    );
}

#[test]
fn partial_lines_are_joined_and_a_last_open_line_is_ended() {
    let output = render(vec![
        (0, started(1, "[1/1] RUN ./build.sh")),
        (100, log(1, "compiling")),
        (200, log(1, " main.c\nlinking")),
        (300, log(1, "\nnext\nno newline")),
        (1500, finished(1)),
    ]);
    // The open line is printed as it comes and continued in place; the vertex's end closes
    // the line before `DONE`.
    assert_eq!(
        output,
        "#1 [1/1] RUN ./build.sh\n\
         #1 0.100 compiling main.c\n\
         #1 0.200 linking\n\
         #1 0.300 next\n\
         #1 0.300 no newline\n\
         #1 DONE 1.5s\n"
    );
}

#[test]
fn an_open_line_of_an_unfinished_vertex_is_flushed_at_the_end() {
    let output = render(vec![(0, started(1, "[1/1] RUN x")), (5, log(1, "tail without newline"))]);
    assert_eq!(output, "#1 [1/1] RUN x\n#1 0.005 tail without newline\n");
}

#[test]
fn a_vertex_started_while_another_holds_the_output_waits_for_it() {
    let output = render(vec![
        (0, started(1, "[a 2/2] RUN slow")),
        (100, log(1, "a1\n")),
        (200, started(2, "[b 2/2] RUN quick")),
        (300, log(2, "b1\n")),
        (400, log(1, "a2\n")),
        (500, finished(2)),
        (600, finished(1)),
    ]);
    // `b` finishes while `a` holds the output: its completed block is printed at once,
    // interrupting `a` (`#1 ...`), and `a` is reopened with its header afterwards.
    assert_eq!(
        output,
        "#1 [a 2/2] RUN slow\n\
         #1 0.100 a1\n\
         #1 0.400 a2\n\
         #1 ...\n\
         \n\
         #2 [b 2/2] RUN quick\n\
         #2 0.100 b1\n\
         #2 DONE 0.3s\n\
         \n\
         #1 [a 2/2] RUN slow\n\
         #1 DONE 0.6s\n"
    );
}

#[test]
fn a_waiting_vertex_is_shown_after_ten_seconds_and_interrupts_an_open_line() {
    let mut script = vec![
        (0, started(1, "[a 1/1] RUN chatty")),
        (10, started(2, "[b 1/1] RUN quiet")),
        (20, log(2, "b waits\n")),
        (30, log(1, "partial")),
    ];
    // `a` keeps writing every second; `b`'s line has waited since 0.01 s.
    for second in 1..=10u64 {
        script.push((second * 1000 + 30, log(1, &format!(" {second}"))));
    }
    script.push((12_000, finished(2)));
    script.push((12_500, log(1, " end\n")));
    script.push((13_000, finished(1)));
    let output = render(script);
    assert_eq!(
        output,
        "#1 [a 1/1] RUN chatty\n\
         #1 0.030 partial 1 2 3 4 5 6 7 8 9 10\n\
         #1 ...\n\
         \n\
         #2 [b 1/1] RUN quiet\n\
         #2 0.010 b waits\n\
         #2 DONE 12.0s\n\
         \n\
         #1 [a 1/1] RUN chatty\n\
         #1 0.030 partial 1 2 3 4 5 6 7 8 9 10 end\n\
         #1 DONE 13.0s\n"
    );
}

#[test]
fn a_waiting_vertex_is_shown_on_a_tick_without_new_events() {
    let buffer = SharedBuffer::default();
    let mut printer = PlainPrinter::new(Box::new(buffer.clone()));
    let at = |millis: u64| Duration::from_secs(100) + Duration::from_millis(millis);
    printer.event(started(1, "one"), at(0)).unwrap();
    printer.event(log(1, "x\n"), at(100)).unwrap();
    printer.event(started(2, "two"), at(200)).unwrap();
    printer.tick(at(5_000)).unwrap();
    assert_eq!(buffer.text(), "#1 one\n#1 0.100 x\n");
    printer.tick(at(10_300)).unwrap();
    assert_eq!(buffer.text(), "#1 one\n#1 0.100 x\n#1 ...\n\n#2 two\n");
}

#[test]
fn the_next_running_vertex_is_reopened_when_the_current_one_completes() {
    let output = render(vec![(0, started(1, "one")), (10, started(2, "two")), (20, finished(1)), (900, finished(2))]);
    assert_eq!(output, "#1 one\n#1 DONE 0.0s\n\n#2 two\n#2 DONE 0.9s\n");
}

#[test]
fn failure_prints_error_and_the_last_log_lines_after_the_progress() {
    let mut script = vec![(0, started(7, "[2/2] RUN make test"))];
    for line in 1..=12u64 {
        script.push((line * 100, log(7, &format!("line {line}\n"))));
    }
    script.push((1300, log(7, "make: *** [test] Error 2")));
    script.push((1400, failed(7, "process \"/bin/sh -c make test\" did not complete successfully: exit code: 2")));
    let output = render(script);
    let mut expected = String::from("#1 [2/2] RUN make test\n");
    for line in 1..=12u64 {
        expected.push_str(&format!("#1 {}.{:03} line {line}\n", line / 10, line % 10 * 100));
    }
    expected.push_str("#1 1.300 make: *** [test] Error 2\n");
    expected.push_str("#1 ERROR: process \"/bin/sh -c make test\" did not complete successfully: exit code: 2\n");
    expected.push_str("------\n > [2/2] RUN make test:\n");
    for line in 4..=12u64 {
        expected.push_str(&format!("{}.{:03} line {line}\n", line / 10, line % 10 * 100));
    }
    expected.push_str("1.300 make: *** [test] Error 2\n------\n");
    assert_eq!(output, expected);
}

#[test]
fn canceled_vertices_print_canceled_and_no_error_block() {
    let output = render(vec![
        (0, started(1, "[a 2/2] RUN sleep 100")),
        (0, started(2, "[b 2/2] RUN false")),
        (500, failed(2, "exit code: 1")),
        (510, Event::Canceled { vertex: 1 }),
    ]);
    assert_eq!(
        output,
        "#1 [a 2/2] RUN sleep 100\n\
         #1 ...\n\
         \n\
         #2 [b 2/2] RUN false\n\
         #2 ERROR: exit code: 1\n\
         \n\
         #1 [a 2/2] RUN sleep 100\n\
         #1 CANCELED\n\
         ------\n > [b 2/2] RUN false:\n------\n"
    );
}

#[test]
fn statuses_show_sizes_times_and_are_throttled_while_running() {
    let layer = |current, done| status(1, "sha256:1234abcd", current, Some(4_560_000), done);
    let output = render(vec![
        (0, started(1, "[1/1] FROM docker.io/library/debian:12")),
        (0, layer(0, false)),             // new: held for BuildKit's 100 ms batch
        (500, layer(100_000, false)),     // the first shown
        (1_000, layer(1_230_000, false)), // 25% more: printed
        (6_100, layer(1_300_000, false)), // 5 s later: printed
        (7_000, layer(4_560_000, true)),  // done: always printed
        (7_000, status(1, "extracting sha256:1234abcd", 0, None, false)),
        (7_300, status(1, "extracting sha256:1234abcd", 0, None, true)),
        (7_400, finished(1)),
    ]);
    assert_eq!(
        output,
        "#1 [1/1] FROM docker.io/library/debian:12\n\
         #1 sha256:1234abcd 100.00kB / 4.56MB 0.5s\n\
         #1 sha256:1234abcd 1.23MB / 4.56MB 1.0s\n\
         #1 sha256:1234abcd 1.30MB / 4.56MB 6.1s\n\
         #1 sha256:1234abcd 4.56MB / 4.56MB 7.0s done\n\
         #1 extracting sha256:1234abcd 0.3s done\n\
         #1 DONE 7.4s\n"
    );
}

/// `testdata/progress/context/buildkit.plain`, `testdata/progress/extracting/buildkit.plain`:
/// BuildKit shows a quick transfer or extraction once, done; a slow one also while open.
#[test]
fn a_status_shows_once_done_when_it_ends_within_100_ms() {
    let buffer = SharedBuffer::default();
    let mut printer = PlainPrinter::new(Box::new(buffer.clone()));
    let at = |millis| Duration::from_millis(millis);
    let context = |current, done| status(1, "transferring context:", current, None, done);
    printer.event(started(1, "[internal] load build context"), at(0)).unwrap();
    printer.event(context(0, false), at(0)).unwrap();
    printer.event(context(2034, true), at(5)).unwrap();
    printer.event(finished(1), at(6)).unwrap();
    printer.event(started(2, "[1/1] FROM busybox"), at(50)).unwrap();
    printer.event(status(2, "extracting sha256:ab", 0, None, false), at(50)).unwrap();
    printer.tick(at(100)).unwrap();
    printer.tick(at(200)).unwrap();
    printer.event(status(2, "extracting sha256:ab", 0, None, true), at(450)).unwrap();
    printer.event(finished(2), at(460)).unwrap();
    printer.finish(at(500), false).unwrap();
    assert_eq!(
        buffer.text(),
        "#1 [internal] load build context\n\
         #1 transferring context: 2.03kB done\n\
         #1 DONE 0.0s\n\
         \n\
         #2 [1/1] FROM busybox\n\
         #2 extracting sha256:ab\n\
         #2 extracting sha256:ab 0.4s done\n\
         #2 DONE 0.4s\n"
    );
}

#[test]
fn a_status_line_does_not_land_inside_an_open_log_line() {
    let output = render(vec![
        (0, started(1, "[internal] load build context")),
        (10, log(1, "half")),
        (20, status(1, "transferring context:", 2100, None, true)),
        (30, log(1, " line\n")),
        (40, finished(1)),
    ]);
    assert_eq!(
        output,
        "#1 [internal] load build context\n\
         #1 0.010 half\n\
         #1 transferring context: 2.10kB done\n\
         #1 0.010 half line\n\
         #1 DONE 0.0s\n"
    );
}

#[test]
fn warnings_are_printed_after_everything_else() {
    let output = render(vec![
        (0, warning("JSONArgsRecommended: JSON arguments recommended (line 3)")),
        (0, cached(1, "[1/1] FROM scratch")),
        (0, warning("StageNameCasing: Stage name 'Build' should be lowercase (line 1)")),
    ]);
    assert_eq!(
        output,
        "#1 [1/1] FROM scratch\n\
         #1 CACHED\n\
         \n 2 warnings found (use rbuild --debug to expand):\n\
         \x20- JSONArgsRecommended: JSON arguments recommended (line 3)\n\
         \x20- StageNameCasing: Stage name 'Build' should be lowercase (line 1)\n"
    );
}

#[test]
fn a_vertex_ending_with_an_open_status_prints_its_end_when_the_status_ends_or_at_the_end() {
    let open = |vertex| status(vertex, "exporting layers", 0, None, false);
    let done = |vertex| status(vertex, "exporting layers", 0, None, true);
    let output = render(vec![
        (0, started(1, "exporting to image")),
        (0, open(1)),
        (100, finished(1)),
        (300, done(1)),
        (400, started(2, "exporting cache")),
        (400, open(2)),
        (500, finished(2)),
    ]);
    assert_eq!(
        output,
        "#1 exporting to image\n\
         #1 exporting layers\n\
         #1 exporting layers 0.3s done\n\
         #1 DONE 0.1s\n\
         \n\
         #2 exporting cache\n\
         #2 exporting layers\n\
         #2 DONE 0.1s\n"
    );
}

#[test]
fn events_for_unknown_vertices_are_ignored() {
    let output = render(vec![(0, log(9, "lost\n")), (0, finished(9)), (0, Event::Canceled { vertex: 9 })]);
    assert_eq!(output, "");
}
