//! What the live view shows, as plain data: the base images being fetched and the steps
//! running now (with their output so far), the ones finished since the last frame, and the
//! functions that turn these into rows for a terminal of a given size. Nothing here touches a
//! terminal, so all of it is tested without one.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rbuild_builder::progress::Event;

use super::heading;
use super::text::{clean, fit, row};

/// Output rows shown beneath a running step: its last lines, as BuildKit shows them.
pub const WINDOW: usize = 6;

/// Output lines kept per running step, to print when it fails; older ones are counted, and
/// `--progress=plain` has them all.
const KEPT: usize = 10_000;

/// A step that has started and not finished.
struct Running {
    number: usize,
    heading: String,
    /// Whether the builder took it from the cache (`Some(None)`: the local store).
    cached: Option<Option<String>>,
    /// Why the cache missed, once the builder says.
    miss: Option<String>,
    started: Instant,
    output: VecDeque<String>,
    dropped: usize,
}

impl Running {
    fn title(&self) -> String {
        match &self.miss {
            Some(reason) => format!("{} · cache miss: {reason}", self.heading),
            None => self.heading.clone(),
        }
    }

    fn end(self, status: String, failed: bool) -> Finished {
        let title = self.title();
        let (output, dropped) = match failed {
            true => (self.output.into_iter().collect(), self.dropped),
            false => (Vec::new(), 0),
        };
        Finished {
            number: self.number,
            title,
            status,
            output,
            dropped,
            whole: false,
        }
    }
}

/// A line of the build's history: a step or base image that is done, to be printed once
/// above the live rows and left in the terminal's scrollback.
#[derive(Debug, PartialEq)]
pub struct Finished {
    number: usize,
    title: String,
    /// CACHED, DONE 1.2s, ERROR 1.2s, CANCELED.
    status: String,
    /// A failed step's whole output (cleaned), printed beneath it.
    output: Vec<String>,
    /// Lines of that output no longer kept.
    dropped: usize,
    /// Printed whole, not cut to the width: a line said between steps.
    whole: bool,
}

impl Finished {
    /// Its rows at `width` columns: the title row cut to the width, a failed step's output in
    /// full (the terminal wraps it), prefixed with the step number as `--progress=plain` does.
    /// A line said between steps is printed whole.
    pub fn rows(&self, width: usize) -> Vec<String> {
        if self.whole {
            return vec![self.title.clone()];
        }
        let mut rows = vec![row(&self.title, &self.status, width)];
        if self.dropped > 0 {
            rows.push(format!(
                "#{} ({} earlier lines not kept; --progress=plain prints them)",
                self.number, self.dropped
            ));
        }
        rows.extend(self.output.iter().map(|line| format!("#{} {line}", self.number)));
        rows
    }
}

/// The state of the live view.
#[derive(Default)]
pub struct Tree {
    /// Base images being fetched, and since when.
    resolving: BTreeMap<String, Instant>,
    /// Running steps by number: shown in plan order.
    running: BTreeMap<usize, Running>,
    finished: Vec<Finished>,
}

/// Elapsed time as the view shows it.
fn seconds(took: Duration) -> String {
    format!("{:.1}s", took.as_secs_f64())
}

impl Tree {
    /// Applies what the builder reported at `at`.
    pub fn apply(&mut self, event: Event, at: Instant) {
        match event {
            Event::Resolving { reference } => {
                self.resolving.insert(reference, at);
            }
            Event::Resolved { reference, digest } => {
                let status = match self.resolving.remove(&reference) {
                    Some(started) => format!("DONE {}", seconds(at.saturating_duration_since(started))),
                    None => String::new(),
                };
                self.finished.push(Finished {
                    number: 0,
                    title: format!("resolved {reference}@{digest}"),
                    status,
                    output: Vec::new(),
                    dropped: 0,
                    whole: false,
                });
            }
            Event::Started(label) => {
                let step = Running {
                    number: label.number,
                    heading: heading(&label),
                    cached: None,
                    miss: None,
                    started: at,
                    output: VecDeque::new(),
                    dropped: 0,
                };
                self.running.insert(label.number, step);
            }
            Event::Cached(label, from) => {
                if let Some(step) = self.running.get_mut(&label.number) {
                    step.cached = Some(from);
                }
            }
            Event::Missed(label, reason) => {
                if let Some(step) = self.running.get_mut(&label.number) {
                    step.miss = Some(reason);
                }
            }
            Event::Output(label, line) => {
                if let Some(step) = self.running.get_mut(&label.number) {
                    step.output.push_back(clean(&line));
                    if step.output.len() > KEPT {
                        step.output.pop_front();
                        step.dropped += 1;
                    }
                }
            }
            Event::Finished(label, took) => {
                if let Some(step) = self.running.remove(&label.number) {
                    let status = match &step.cached {
                        Some(from) => super::cached(from.as_deref()),
                        None => format!("DONE {}", seconds(took)),
                    };
                    self.finished.push(step.end(status, false));
                }
            }
            Event::Failed(label, took) => {
                if let Some(step) = self.running.remove(&label.number) {
                    self.finished
                        .push(step.end(format!("ERROR {}", seconds(took)), true));
                }
            }
            Event::Canceled(label, took) => {
                if let Some(step) = self.running.remove(&label.number) {
                    self.finished
                        .push(step.end(format!("CANCELED {}", seconds(took)), false));
                }
            }
        }
    }

    /// Prints `line` above the live rows with what finished: what the caller says while
    /// steps run (a bake target pushed while others build).
    pub fn say(&mut self, line: String) {
        self.finished.push(Finished {
            number: 0,
            title: line,
            status: String::new(),
            output: Vec::new(),
            dropped: 0,
            whole: true,
        });
    }

    /// What finished since the last call, in the order it finished.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// Ends everything still running (the build stopped on another step's error): each as a
    /// finished line saying so, without its output.
    pub fn cancel(&mut self, at: Instant) {
        for reference in std::mem::take(&mut self.resolving).into_keys() {
            self.finished.push(Finished {
                number: 0,
                title: format!("resolving {reference}"),
                status: "CANCELED".to_owned(),
                output: Vec::new(),
                dropped: 0,
                whole: false,
            });
        }
        for step in std::mem::take(&mut self.running).into_values() {
            let took = seconds(at.saturating_duration_since(step.started));
            self.finished.push(step.end(format!("CANCELED {took}"), false));
        }
    }

    /// The live rows at `now` for a terminal area of `width` columns and `height` rows: one
    /// per base image being fetched and per running step, with its timer, and beneath each
    /// step the last lines of its output. When they do not all fit, output windows shrink
    /// (each keeps a fair share), then steps beyond the height are summed up in one row.
    pub fn rows(&self, now: Instant, width: usize, height: usize) -> Vec<String> {
        let timer = |since: &Instant| seconds(now.saturating_duration_since(*since));
        let mut rows: Vec<String> = self
            .resolving
            .iter()
            .map(|(reference, since)| row(&format!("resolving {reference}"), &timer(since), width))
            .collect();
        let steps: Vec<(&Running, String)> = self
            .running
            .values()
            .map(|step| (step, row(&step.title(), &timer(&step.started), width)))
            .collect();
        if rows.len() + steps.len() > height {
            rows.extend(steps.into_iter().map(|(_, title)| title));
            let shown = height.saturating_sub(1);
            let more = rows.len() - shown;
            rows.truncate(shown);
            if height > 0 {
                rows.push(fit(&format!("… and {more} more running"), width));
            }
            return rows;
        }
        let wanted: Vec<usize> = steps.iter().map(|(s, _)| s.output.len().min(WINDOW)).collect();
        let windows = share(&wanted, height - rows.len() - steps.len());
        for ((step, title), window) in steps.into_iter().zip(windows) {
            rows.push(title);
            let tail = step.output.range(step.output.len() - window..);
            rows.extend(tail.map(|line| fit(&format!("  │ {line}"), width)));
        }
        rows
    }
}

/// Splits `rows` between windows that want `wanted` rows each: one row to each in turn,
/// so that a long window does not starve the others.
fn share(wanted: &[usize], rows: usize) -> Vec<usize> {
    let mut given = vec![0; wanted.len()];
    let mut left = rows;
    while left > 0 {
        let before = left;
        for (give, want) in given.iter_mut().zip(wanted) {
            if left > 0 && *give < *want {
                *give += 1;
                left -= 1;
            }
        }
        if left == before {
            break;
        }
    }
    given
}

#[cfg(test)]
mod tests {
    use rbuild_builder::progress::StepLabel;

    use super::*;

    fn label(number: usize, instruction: &str) -> StepLabel {
        StepLabel {
            number,
            stage: "app".to_owned(),
            position: (number, 5),
            instruction: instruction.to_owned(),
            line: number,
        }
    }

    /// A tree where step `number` runs `instruction`, started at `start`, and has printed
    /// `lines` lines ("line 1", "line 2", …).
    fn running(tree: &mut Tree, start: Instant, number: usize, instruction: &str, lines: usize) {
        tree.apply(Event::Started(label(number, instruction)), start);
        for n in 1..=lines {
            tree.apply(
                Event::Output(label(number, instruction), format!("line {n}")),
                start,
            );
        }
    }

    fn titles(finished: &[Finished], width: usize) -> Vec<String> {
        finished.iter().map(|f| f.rows(width)[0].clone()).collect()
    }

    #[test]
    fn a_running_step_shows_its_timer_and_last_lines() {
        let start = Instant::now();
        let mut tree = Tree::default();
        running(&mut tree, start, 3, "RUN make", 20);
        let rows = tree.rows(start + Duration::from_millis(12_345), 40, 20);
        let mut expected = vec!["#3 [app 3/5] RUN make              12.3s".to_owned()];
        expected.extend((15..=20).map(|n| format!("  │ line {n}")));
        assert_eq!(rows, expected);
        assert!(tree.take_finished().is_empty());
    }

    #[test]
    fn a_step_with_little_output_shows_all_of_it() {
        let start = Instant::now();
        let mut tree = Tree::default();
        running(&mut tree, start, 1, "RUN true", 0);
        running(&mut tree, start, 2, "RUN echo", 2);
        let rows = tree.rows(start, 30, 20);
        assert_eq!(
            rows,
            [
                "#1 [app 1/5] RUN true     0.0s",
                "#2 [app 2/5] RUN echo     0.0s",
                "  │ line 1",
                "  │ line 2",
            ]
        );
    }

    #[test]
    fn finished_steps_collapse_to_one_line() {
        let start = Instant::now();
        let mut tree = Tree::default();
        running(&mut tree, start, 2, "COPY . /app", 0);
        tree.apply(Event::Cached(label(2, "COPY . /app"), None), start);
        tree.apply(Event::Finished(label(2, "COPY . /app"), Duration::ZERO), start);
        running(&mut tree, start, 3, "RUN make", 0);
        tree.apply(
            Event::Missed(label(3, "RUN make"), "src/main.rs: content changed".to_owned()),
            start,
        );
        for n in 0..50 {
            tree.apply(
                Event::Output(label(3, "RUN make"), format!("compiling {n}")),
                start,
            );
        }
        tree.apply(
            Event::Finished(label(3, "RUN make"), Duration::from_millis(4_210)),
            start,
        );
        running(&mut tree, start, 4, "ENV A=1", 0);
        tree.apply(
            Event::Finished(label(4, "ENV A=1"), Duration::from_millis(1)),
            start,
        );

        assert!(tree.rows(start, 80, 20).is_empty(), "nothing runs");
        let finished = tree.take_finished();
        let rows: Vec<Vec<String>> = finished.iter().map(|f| f.rows(80)).collect();
        assert_eq!(
            rows,
            [
                vec![format!("#2 [app 2/5] COPY . /app{}CACHED", " ".repeat(50))],
                vec![format!(
                    "#3 [app 3/5] RUN make · cache miss: src/main.rs: content changed{}DONE 4.2s",
                    " ".repeat(7)
                )],
                vec![format!("#4 [app 4/5] ENV A=1{}DONE 0.0s", " ".repeat(51))],
            ]
        );
        assert!(tree.take_finished().is_empty(), "each is printed once");
    }

    #[test]
    fn a_failed_step_prints_its_whole_output() {
        let start = Instant::now();
        let mut tree = Tree::default();
        running(&mut tree, start, 5, "RUN ./test.sh", 200);
        tree.apply(
            Event::Failed(label(5, "RUN ./test.sh"), Duration::from_millis(2_500)),
            start,
        );
        let finished = tree.take_finished();
        assert_eq!(finished.len(), 1);
        let rows = finished[0].rows(40);
        assert_eq!(rows[0], "#5 [app 5/5] RUN ./test.sh    ERROR 2.5s");
        let output: Vec<String> = (1..=200).map(|n| format!("#5 line {n}")).collect();
        assert_eq!(rows[1..], output[..]);
    }

    #[test]
    fn a_failed_step_with_endless_output_says_what_it_dropped() {
        let start = Instant::now();
        let mut tree = Tree::default();
        running(&mut tree, start, 1, "RUN yes", KEPT + 3);
        tree.apply(Event::Failed(label(1, "RUN yes"), Duration::ZERO), start);
        let rows = tree.take_finished()[0].rows(40);
        assert_eq!(rows.len(), 2 + KEPT);
        assert_eq!(
            rows[1],
            "#1 (3 earlier lines not kept; --progress=plain prints them)"
        );
        assert_eq!(rows[2], "#1 line 4");
    }

    #[test]
    fn a_build_that_stops_cancels_what_still_runs() {
        let start = Instant::now();
        let mut tree = Tree::default();
        tree.apply(
            Event::Resolving {
                reference: "base:1".to_owned(),
            },
            start,
        );
        running(&mut tree, start, 2, "RUN sleep 100", 3);
        tree.cancel(start + Duration::from_secs(2));
        assert!(tree.rows(start, 40, 10).is_empty());
        assert_eq!(
            titles(&tree.take_finished(), 40),
            [
                "resolving base:1                CANCELED",
                "#2 [app 2/5] RUN sleep 100 CANCELED 2.0s",
            ]
        );
    }

    #[test]
    fn a_step_stopped_by_another_failure_ends_canceled_without_its_output() {
        let start = Instant::now();
        let mut tree = Tree::default();
        running(&mut tree, start, 2, "RUN sleep 100", 3);
        tree.apply(
            Event::Canceled(label(2, "RUN sleep 100"), Duration::from_millis(1_500)),
            start,
        );
        assert!(tree.rows(start, 40, 10).is_empty());
        let finished = tree.take_finished();
        assert_eq!(
            titles(&finished, 40),
            ["#2 [app 2/5] RUN sleep 100 CANCELED 1.5s"]
        );
        assert!(finished[0].output.is_empty());
    }

    #[test]
    fn said_lines_come_out_whole_in_their_turn() {
        let start = Instant::now();
        let mut tree = Tree::default();
        running(&mut tree, start, 1, "COPY a /a", 0);
        running(&mut tree, start, 2, "RUN sleep 100", 3);
        tree.apply(Event::Finished(label(1, "COPY a /a"), Duration::ZERO), start);
        let said = "pushed reg/app:1 (1234567 bytes uploaded, 2 blobs already there)";
        tree.say(said.to_owned());
        let rows: Vec<String> = tree
            .take_finished()
            .iter()
            .flat_map(|finished| finished.rows(20))
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], said, "not cut to the width");
        assert_eq!(tree.rows(start, 40, 10).len(), 4, "the running step stays live");
    }

    #[test]
    fn base_images_show_while_fetched_and_once_resolved() {
        let start = Instant::now();
        let mut tree = Tree::default();
        let resolving = Event::Resolving {
            reference: "reg/base:1".to_owned(),
        };
        tree.apply(resolving, start);
        assert_eq!(
            tree.rows(start + Duration::from_secs(1), 30, 5),
            ["resolving reg/base:1      1.0s"]
        );
        let resolved = |reference: &str| Event::Resolved {
            reference: reference.to_owned(),
            digest: "sha256:abcdef0123456789".to_owned(),
        };
        tree.apply(resolved("reg/base:1"), start + Duration::from_secs(2));
        tree.apply(resolved("local:1"), start);
        assert!(tree.rows(start, 30, 5).is_empty());
        assert_eq!(
            titles(&tree.take_finished(), 40),
            [
                "resolved reg/base:1@sha256:ab… DONE 2.0s",
                "resolved local:1@sha256:abcdef0123456789",
            ]
        );
    }

    #[test]
    fn rows_are_cut_to_the_width_in_columns() {
        let start = Instant::now();
        let mut tree = Tree::default();
        let wide = "RUN echo 漢字漢字漢字漢字漢字漢字漢字漢字";
        running(&mut tree, start, 1, wide, 0);
        tree.apply(
            Event::Output(label(1, wide), "出力漢字漢字漢字漢字漢字".to_owned()),
            start,
        );
        tree.apply(
            Event::Output(label(1, wide), format!("\x1b[32m{}\x1b[0m", "x".repeat(100))),
            start,
        );
        let rows = tree.rows(start, 24, 10);
        assert_eq!(
            rows,
            [
                "#1 [app 1/5] RUN e… 0.0s",
                "  │ 出力漢字漢字漢字漢…",
                "  │ xxxxxxxxxxxxxxxxxxx…",
            ]
        );
        for row in &rows {
            assert!(
                super::super::text::columns(row) <= 24,
                "{row:?} is wider than 24 columns"
            );
        }
    }

    #[test]
    fn a_short_terminal_shrinks_windows_fairly_then_counts_steps() {
        let start = Instant::now();
        let mut tree = Tree::default();
        running(&mut tree, start, 1, "RUN a", 10);
        running(&mut tree, start, 2, "RUN b", 1);
        running(&mut tree, start, 3, "RUN c", 10);
        let rows = tree.rows(start, 24, 8);
        assert_eq!(
            rows,
            [
                "#1 [app 1/5] RUN a  0.0s",
                "  │ line 9",
                "  │ line 10",
                "#2 [app 2/5] RUN b  0.0s",
                "  │ line 1",
                "#3 [app 3/5] RUN c  0.0s",
                "  │ line 9",
                "  │ line 10",
            ]
        );
        assert_eq!(
            tree.rows(start, 24, 3),
            [
                "#1 [app 1/5] RUN a  0.0s",
                "#2 [app 2/5] RUN b  0.0s",
                "#3 [app 3/5] RUN c  0.0s"
            ]
        );
        assert_eq!(
            tree.rows(start, 24, 2),
            ["#1 [app 1/5] RUN a  0.0s", "… and 2 more running"]
        );
        assert_eq!(tree.rows(start, 24, 1), ["… and 3 more running"]);
        assert!(tree.rows(start, 24, 0).is_empty());
    }
}
