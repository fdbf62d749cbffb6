//! Bake's targets built at once: each on a thread of its own, starting as soon as the targets
//! it reads (`target:NAME`) are done, all reporting to one display where each step is named by
//! its target.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rbuild_builder::progress::{Event, Progress, StepLabel};

/// The targets finished so far, and whether each succeeded.
#[derive(Default)]
pub struct Finished {
    targets: Mutex<HashMap<String, bool>>,
    changed: Condvar,
}

impl Finished {
    fn targets(&self) -> MutexGuard<'_, HashMap<String, bool>> {
        self.targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `target` finished, and whether it succeeded (its image is in the store
    /// under its local name), and wakes the targets waiting for it.
    pub fn finish(&self, target: &str, succeeded: bool) {
        self.targets().insert(target.to_owned(), succeeded);
        self.changed.notify_all();
    }

    /// Waits until `target` has finished; whether it succeeded.
    pub fn wait(&self, target: &str) -> bool {
        let mut targets = self.targets();
        loop {
            if let Some(succeeded) = targets.get(target) {
                return *succeeded;
            }
            targets = self
                .changed
                .wait(targets)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// A target's build events, as the shared display shows them: its stages named `target
/// stage`, its steps numbered in one sequence with every other target's (in the order they
/// start), as `docker buildx bake` shows them.
pub struct TargetProgress {
    target: String,
    /// The next number free across targets.
    next: Arc<AtomicUsize>,
    /// This target's step numbers and the numbers shown for them.
    numbers: Mutex<HashMap<usize, usize>>,
    display: Arc<dyn Progress>,
}

impl TargetProgress {
    /// Reports `target`'s events to `display`, numbering steps from `next`.
    pub fn new(target: &str, next: Arc<AtomicUsize>, display: Arc<dyn Progress>) -> TargetProgress {
        TargetProgress {
            target: target.to_owned(),
            next,
            numbers: Mutex::default(),
            display,
        }
    }

    fn label(&self, label: StepLabel) -> StepLabel {
        let mut numbers = self
            .numbers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let number = *numbers
            .entry(label.number)
            .or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed));
        StepLabel {
            number,
            stage: format!("{} {}", self.target, label.stage),
            ..label
        }
    }
}

impl Progress for TargetProgress {
    fn event(&self, event: Event) {
        let event = match event {
            Event::Started(label) => Event::Started(self.label(label)),
            Event::Cached(label, from) => Event::Cached(self.label(label), from),
            Event::Missed(label, reason) => Event::Missed(self.label(label), reason),
            Event::Finished(label, took) => Event::Finished(self.label(label), took),
            Event::Failed(label, took) => Event::Failed(self.label(label), took),
            Event::Canceled(label, took) => Event::Canceled(self.label(label), took),
            Event::Output(label, text) => Event::Output(self.label(label), text),
            other @ (Event::Resolving { .. } | Event::Resolved { .. }) => other,
        };
        self.display.event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the events it receives.
    #[derive(Default)]
    struct Kept(Mutex<Vec<StepLabel>>);

    impl Progress for Kept {
        fn event(&self, event: Event) {
            if let Event::Started(label) = event {
                self.0.lock().unwrap().push(label);
            }
        }
    }

    fn label(number: usize, stage: &str) -> StepLabel {
        StepLabel {
            number,
            stage: stage.to_owned(),
            position: (1, 1),
            instruction: "RUN true".to_owned(),
            line: 2,
        }
    }

    #[test]
    fn steps_of_two_targets_get_numbers_of_their_own_and_their_target_name() {
        let kept = Arc::new(Kept::default());
        let next = Arc::new(AtomicUsize::new(1));
        let app = TargetProgress::new("app", next.clone(), kept.clone());
        let worker = TargetProgress::new("worker", next, kept.clone());
        app.event(Event::Started(label(1, "base")));
        worker.event(Event::Started(label(1, "base")));
        app.event(Event::Started(label(2, "app")));
        app.event(Event::Started(label(1, "base")));
        let shown: Vec<(usize, String)> = kept
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|l| (l.number, l.stage.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                (1, "app base".to_owned()),
                (2, "worker base".to_owned()),
                (3, "app app".to_owned()),
                (1, "app base".to_owned()),
            ]
        );
    }

    #[test]
    fn a_target_waits_for_the_one_it_reads() {
        let finished = Finished::default();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| finished.wait("app"));
            finished.finish("other", false);
            finished.finish("app", true);
            assert!(waiter.join().unwrap());
        });
        assert!(!finished.wait("other"));
    }
}
