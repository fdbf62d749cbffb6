//! Solving stages step by step against the cache. A [`Solver`] holds what the stage tasks of
//! one build share; [`Solver::run_stage`] runs a stage's steps in order, and
//! [`StepContext::cached_layer`] is the one place where a step's key is looked up and, on a
//! miss, its layer built, written and recorded — so every step kind ([`steps`](crate::steps))
//! only says what keys it and how its files are made.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rbuild_dockerfile::plan::{Base, Stage, Step, StepKind};
use rbuild_layer::{Entry, Extras, LayerInfo, PreviousBlocks, write_layer_with};
use rbuild_oci::manifest::Platform;
use rbuild_oci::{Descriptor, Digest, time};
use rbuild_runtime::Stop;

use crate::cache::{CacheRecord, CachedLayer};
use crate::error::{BuildError, Result};
use crate::flight::{Flight, InFlight};
use crate::image::ImageState;
use crate::keys::{CacheKey, Inputs};
use crate::metrics::StepMetrics;
use crate::prepare::Sources;
use crate::progress::{Event, Progress, StepLabel};
use crate::remote::Remote;
use crate::remote_cache::StepRecord;
use crate::request::BuildRequest;
use crate::rootfs::RootfsView;
use crate::snapshot::PendingSnapshot;
use crate::store::LocalStore;

/// A stage's image and the key of its filesystem, as its steps change them; once the stage
/// is done, what the stages reading from it see.
#[derive(Clone, Debug)]
pub(crate) struct StageState {
    /// The image so far.
    pub image: ImageState,
    /// The cache key of the filesystem so far (the key of the last step that changed it, or
    /// the base's); steps below key on it.
    pub fs_key: String,
}

/// What the builds of one [`Builder`](crate::Builder) share: the store, where base images and
/// caches come from, and the steps being built.
pub(crate) struct Shared {
    pub store: Arc<LocalStore>,
    pub remote: Arc<dyn Remote>,
    pub flights: Arc<InFlight>,
}

/// Everything the stage tasks of one build share.
pub(crate) struct Solver {
    pub store: Arc<LocalStore>,
    pub remote: Arc<dyn Remote>,
    /// The steps being built by this build and the others of its builder.
    flights: Arc<InFlight>,
    pub request: BuildRequest,
    /// The Dockerfile's path as messages show it.
    pub dockerfile_name: String,
    pub sources: Sources,
    pub progress: Arc<dyn Progress>,
    /// Given when a stage fails (or the builder stops every build): the other stages stop.
    pub stop: Stop,
    /// The build's time, RFC 3339 (or `SOURCE_DATE_EPOCH`'s).
    pub created: String,
    /// The build's time, seconds since the epoch (or `SOURCE_DATE_EPOCH`).
    pub now: i64,
    pub platform: Platform,
    /// The build's directory for temporary files, made when first needed (a build whose
    /// every step is cached writes nothing) and removed with the solver.
    scratch: OnceLock<tempfile::TempDir>,
    /// The OCI runtime, made on the first RUN (see [`steps`](crate::steps)).
    pub runtime: OnceLock<Arc<rbuild_runtime::Runtime>>,
    step_numbers: HashMap<(usize, usize), usize>,
    metrics: Mutex<Vec<StepMetrics>>,
    /// Each step solved, by stage index, for `--cache-to`.
    solved: Mutex<Vec<(usize, CacheKey, CacheRecord)>>,
}

/// What a step did, for the display and the metrics.
pub(crate) enum Outcome {
    /// It only changed the config.
    Config,
    /// Its layer came from the cache: the local store, or the remote cache named.
    Hit { from: Option<String> },
    /// It ran; the reason says why the cache missed.
    Built { reason: String, layer: LayerWork },
}

/// What writing a step's layer took.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LayerWork {
    /// Uncompressed bytes.
    pub written: u64,
    /// Compressed bytes.
    pub compressed: u64,
    /// Uncompressed bytes whose compressed form was copied from the step's previous layer.
    pub reused: u64,
    /// Milliseconds.
    pub ms: f64,
}

/// A step's files as a step kind makes them.
pub(crate) struct Made {
    /// The layer's entries; none when nothing changed on disk.
    pub entries: Vec<Entry>,
    /// What the entries' files live in, kept until the layer is written (a RUN's upper
    /// directory goes with it).
    pub holder: Option<rbuild_runtime::Finished>,
}

impl Made {
    /// Entries whose files outlive the step.
    pub fn entries(entries: Vec<Entry>) -> Made {
        Made {
            entries,
            holder: None,
        }
    }
}

/// One step being solved: where it is and what it may read.
pub(crate) struct StepContext<'a> {
    pub solver: &'a Solver,
    pub stage: &'a Stage,
    pub step: &'a Step,
    /// The step's position in its stage.
    pub position: usize,
    /// Names the step across builds (Dockerfile, stage, position): what a miss is explained
    /// against and whose previous layer a new one may copy blocks from.
    pub id: String,
    pub label: StepLabel,
    /// The finished stages this stage reads from, by index.
    pub done: &'a HashMap<usize, Arc<StageState>>,
    /// Bytes of layers a remote cache gave that the step needed the files of.
    pub fetched: AtomicU64,
}

impl Solver {
    /// A solver for one build of `request` sharing `shared` with the other builds of its
    /// builder, whose plan has `stages`; `stop` stops it.
    pub fn new(
        shared: &Shared,
        request: BuildRequest,
        sources: Sources,
        stages: &[Stage],
        progress: Arc<dyn Progress>,
        stop: Stop,
    ) -> Solver {
        let now = request.layer_options.source_date_epoch.unwrap_or_else(time::now);
        Solver {
            store: shared.store.clone(),
            remote: shared.remote.clone(),
            flights: shared.flights.clone(),
            dockerfile_name: request.dockerfile.display().to_string(),
            platform: request.target_platform(),
            request,
            sources,
            progress,
            stop,
            created: time::rfc3339(now),
            now,
            scratch: OnceLock::new(),
            runtime: OnceLock::new(),
            step_numbers: number_steps(stages),
            metrics: Mutex::new(Vec::new()),
            solved: Mutex::new(Vec::new()),
        }
    }

    /// The numbers of every step run so far, in step order.
    pub fn step_metrics(&self) -> Vec<StepMetrics> {
        let mut steps = self.metrics.lock().map(|m| m.clone()).unwrap_or_default();
        steps.sort_by_key(|s| s.step);
        steps
    }

    /// The build's scratch directory (see [`Solver::scratch`](Solver#structfield.scratch)).
    pub fn scratch(&self) -> Result<&Path> {
        if let Some(dir) = self.scratch.get() {
            return Ok(dir.path());
        }
        let dir = self.store.scratch_dir()?;
        Ok(self.scratch.get_or_init(|| dir).path())
    }

    /// The `created` time of a step reused from the cache: when it was built, unless
    /// `SOURCE_DATE_EPOCH` fixes every time.
    fn reused_created(&self, built: Option<String>) -> String {
        match (self.request.layer_options.source_date_epoch, built) {
            (None, Some(built)) => built,
            _ => self.created.clone(),
        }
    }

    /// The `created` time of a step that only changes the config: the time of the entry
    /// before it (see [`ImageState::last_created`]); the first entries of a `FROM scratch`
    /// image have none until the image is written (see [`crate::export::write_image`]).
    pub fn created_after(&self, state: &ImageState) -> Option<String> {
        if self.request.layer_options.source_date_epoch.is_some() {
            return Some(self.created.clone());
        }
        state.last_created()
    }

    /// Whether `stage` is built without the cache (`--no-cache`, `--no-cache-filter`).
    fn no_cache(&self, stage: &Stage) -> bool {
        self.request.no_cache
            || stage.name.as_ref().is_some_and(|n| {
                self.request
                    .no_cache_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(n))
            })
            || self.request.no_cache_filter.contains(&stage.index.to_string())
    }

    /// How the display names step `position` of `stage`.
    pub fn label(&self, stage: &Stage, position: usize) -> StepLabel {
        StepLabel {
            number: self
                .step_numbers
                .get(&(stage.index, position))
                .copied()
                .unwrap_or(0),
            stage: stage.name.clone().unwrap_or_else(|| stage.index.to_string()),
            position: (position + 1, stage.steps.len()),
            instruction: stage.steps[position].instruction.clone(),
            line: stage.steps[position].span.start_line,
        }
    }

    /// Keeps a finished step's numbers for the build's metrics.
    pub fn record(&self, metrics: StepMetrics) {
        if let Ok(mut all) = self.metrics.lock() {
            all.push(metrics);
        }
    }

    /// Every step solved, each marked whether its result is in the image of `target` (the
    /// target stage's steps and those of the stages it is based on).
    pub fn step_records(&self, stages: &[Stage], target: usize) -> Vec<StepRecord> {
        let mut in_image = HashSet::from([target]);
        let mut stage = stages.iter().find(|s| s.index == target);
        while let Some(Base::Stage { index }) = stage.map(|s| &s.base) {
            in_image.insert(*index);
            stage = stages.iter().find(|s| s.index == *index);
        }
        let solved = self.solved.lock().map(|s| s.clone()).unwrap_or_default();
        solved
            .into_iter()
            .map(|(stage, key, record)| StepRecord {
                key: key.0,
                record,
                in_image: in_image.contains(&stage),
            })
            .collect()
    }

    /// Keeps a step's result for `--cache-to`.
    fn keep(&self, stage: usize, key: &CacheKey, record: &CacheRecord) {
        if let Ok(mut solved) = self.solved.lock() {
            solved.push((stage, key.clone(), record.clone()));
        }
    }

    /// Writes a step's layer to the content store, copying what it can from the layer the step
    /// made last time, and unpacking it into `snapshot` on the way. Returns the layer, its
    /// digest and size as stored, and whether the snapshot was unpacked.
    fn write_layer(
        &self,
        step_id: &str,
        entries: Vec<Entry>,
        snapshot: Option<&PendingSnapshot<'_>>,
    ) -> Result<(LayerInfo, Digest, u64, bool)> {
        let previous = self.previous_blocks(step_id);
        let mut writer = self.store.content.writer()?;
        let (info, unpacked) = std::thread::scope(|scope| {
            let pipe = match snapshot {
                Some(_) => {
                    let pipe = std::io::pipe().map_err(|e| BuildError::io("creating a pipe", e))?;
                    // A 1 MiB pipe rather than 64 KiB lets the writer and the unpacker run
                    // apart instead of in lockstep (best effort: the default still works).
                    let _ = rustix::pipe::fcntl_setpipe_size(&pipe.1, 1 << 20);
                    Some(pipe)
                }
                None => None,
            };
            let (reader, tap) = pipe.unzip();
            // Each tar header and each file's content would be a write to the pipe of its own.
            let mut tap = tap.map(|t| std::io::BufWriter::with_capacity(256 * 1024, t));
            let unpacker = snapshot
                .zip(reader)
                .map(|(s, r)| scope.spawn(move || s.unpack(r)));
            let extras = Extras {
                previous: previous.as_ref(),
                tap: tap.as_mut().map(|t| t as &mut (dyn std::io::Write + Send)),
            };
            let info = write_layer_with(entries, &self.request.layer_options, extras, &mut writer);
            // The end of the pipe (after what the buffer holds): the unpacker reads to it.
            drop(tap);
            let unpacked = unpacker.is_some_and(|u| matches!(u.join(), Ok(Ok(()))));
            let info = info.map_err(BuildError::WriteLayer)?;
            Ok::<_, BuildError>((info, unpacked))
        })?;
        let (digest, size) = writer.commit(Some(&info.digest))?;
        if !info.blocks.blocks.is_empty() {
            self.store.cache.store_blocks(&digest, &info.blocks)?;
        }
        Ok((info, digest, size, unpacked))
    }

    /// The gzip blocks of the layer `step` made last time, which its new layer may copy.
    fn previous_blocks(&self, step: &str) -> Option<PreviousBlocks> {
        let layer = self.store.cache.previous_layer(step)?;
        let blocks = self.store.cache.blocks(&layer.descriptor.digest)?;
        let blob = self.store.content.open_blob(&layer.descriptor.digest).ok()?;
        Some(PreviousBlocks::new(&blocks, blob))
    }
}

impl StepContext<'_> {
    /// The filesystem of an image state, layers unpacked once and viewed merged.
    pub fn view(&self, state: &ImageState) -> Result<RootfsView> {
        self.view_layers(&state.layers)
    }

    /// The filesystem of `layers`, fetching first those a remote cache gave and the store lacks.
    pub fn view_layers(&self, layers: &[CachedLayer]) -> Result<RootfsView> {
        let solver = self.solver;
        if layers
            .iter()
            .any(|l| !solver.store.content.contains(&l.descriptor.digest))
        {
            let descriptors: Vec<Descriptor> = layers.iter().map(|l| l.descriptor.clone()).collect();
            let fetch =
                solver
                    .sources
                    .caches
                    .fetch_missing(&descriptors, &solver.store, solver.remote.as_ref());
            let bytes = tokio::runtime::Handle::current().block_on(fetch)?;
            self.fetched.fetch_add(bytes, Ordering::Relaxed);
        }
        solver.store.snapshots.view(layers, &solver.store.content)
    }

    /// Records a step that only changed the config.
    pub fn config_only(&self, state: &mut StageState) -> Outcome {
        let created = self.solver.created_after(&state.image);
        state
            .image
            .push_history(self.step.created_by.clone(), created, true);
        Outcome::Config
    }

    /// Whether a RUN comes later in the stage (and so will need this step's layer unpacked).
    fn run_follows(&self) -> bool {
        self.stage.steps[self.position + 1..]
            .iter()
            .any(|s| matches!(s.kind, StepKind::Run(_)))
    }

    /// The result cached under `key`: the local store first, then the remote caches in the
    /// order given (and which one); none with `--no-cache`. A remote hit's layer stays remote
    /// until something needs its files (see [`Solver::view_layers`]).
    fn find(&self, key: &CacheKey) -> Option<(CacheRecord, Option<String>)> {
        let solver = self.solver;
        if solver.no_cache(self.stage) {
            return None;
        }
        let content = &solver.store.content;
        let usable = |record: &CacheRecord| {
            record
                .layer
                .as_ref()
                .is_none_or(|l| content.contains(&l.descriptor.digest))
        };
        solver
            .store
            .cache
            .lookup(key, usable)
            .map(|record| (record, None))
            .or_else(|| {
                let (record, location) = solver.sources.caches.lookup(&key.0)?;
                Some((record.clone(), Some(location.to_string())))
            })
    }

    /// Applies a cached result to the stage.
    fn reuse(&self, record: CacheRecord, from: Option<String>, state: &mut StageState) -> Outcome {
        let created = Some(self.solver.reused_created(record.created));
        let created_by = self.step.created_by.clone();
        match record.layer {
            Some(layer) => state.image.push_layer(layer, created_by, created),
            None => state.image.push_history(created_by, created, true),
        }
        Outcome::Hit { from }
    }

    /// Keeps the step's result for `--cache-to`, and under its second key `alias`, if it has
    /// one, in the local store too.
    fn remember(&self, key: &CacheKey, alias: Option<&CacheKey>, record: &CacheRecord) -> Result<()> {
        let solver = self.solver;
        solver.keep(self.stage.index, key, record);
        if let Some(alias) = alias {
            let aliased = CacheRecord {
                same_as: Some(key.0.clone()),
                ..record.clone()
            };
            solver.store.cache.store_alias(alias, &aliased)?;
            solver.keep(self.stage.index, alias, &aliased);
        }
        Ok(())
    }

    /// Looks the step up by its second key (see [`CacheRecord::same_as`]): a hit needs no
    /// inputs beyond that key's, so whatever computing the step's own key would read (the
    /// files of the stage copied from) is not fetched.
    pub fn alias_hit(&self, alias: &CacheKey, state: &mut StageState) -> Result<Option<Outcome>> {
        let Some((record, from)) = self.find(alias) else {
            return Ok(None);
        };
        let own = record.same_as.clone().map_or_else(|| alias.clone(), CacheKey);
        let plain = CacheRecord {
            same_as: None,
            ..record.clone()
        };
        let cache = &self.solver.store.cache;
        if from.is_some() {
            cache.store_alias(alias, &record)?;
            cache.store_alias(&own, &plain)?;
        }
        self.solver.keep(self.stage.index, alias, &record);
        self.solver.keep(self.stage.index, &own, &plain);
        state.fs_key = own.to_string();
        Ok(Some(self.reuse(record, from, state)))
    }

    /// Looks the step up by `inputs`, or makes its layer with `make` and records it (under
    /// `alias` too, when the step has a second key). `details` adds to the inputs what only
    /// explaining a miss needs (see [`Inputs::set_details`]). While it makes the layer, the
    /// key is claimed: another build (or stage) reaching the same key waits, then hits.
    pub fn cached_layer(
        &self,
        mut inputs: Inputs,
        alias: Option<&CacheKey>,
        details: impl FnOnce(&mut Inputs),
        state: &mut StageState,
        make: impl FnOnce() -> Result<Made>,
    ) -> Result<Outcome> {
        let solver = self.solver;
        let store = &solver.store;
        let key = inputs.key();
        state.fs_key = key.to_string();
        let no_cache = solver.no_cache(self.stage);
        // Without the cache there is nothing to wait for: each build makes its own.
        let _claim = match no_cache {
            true => None,
            false => match solver.flights.find_or_claim(&key, || self.find(&key)) {
                Flight::Found((record, from)) => {
                    if from.is_some() {
                        store.cache.store(&self.id, &inputs, &record)?;
                    }
                    self.remember(&key, alias, &record)?;
                    return Ok(self.reuse(record, from, state));
                }
                Flight::Claimed(claim) => Some(claim),
            },
        };
        let created_by = self.step.created_by.clone();
        details(&mut inputs);
        let reason = if no_cache {
            "--no-cache".to_owned()
        } else {
            store.cache.explain_miss(&self.id, &inputs)
        };
        solver
            .progress
            .event(Event::Missed(self.label.clone(), reason.clone()));
        let created = Some(solver.created.clone());
        let Made {
            entries,
            holder: _holder,
        } = make()?;
        if entries.is_empty() {
            // Nothing changed on disk: no layer, as BuildKit leaves none for an empty diff.
            let record = CacheRecord {
                layer: None,
                created: created.clone(),
                same_as: None,
            };
            store.cache.store(&self.id, &inputs, &record)?;
            self.remember(&key, alias, &record)?;
            state.image.push_history(created_by, created, true);
            return Ok(Outcome::Built {
                reason,
                layer: LayerWork::default(),
            });
        }
        let layer_started = Instant::now();
        // A RUN later in the stage will need the layer unpacked: do it while writing it, or
        // as a delta over the snapshot of what the step made last time.
        let snapshot = if self.run_follows() {
            let previous = store.cache.previous_layer(&self.id).map(|l| l.diff_id);
            let epoch = solver.request.layer_options.source_date_epoch;
            Some(store.snapshots.plan(&entries, epoch, previous.as_ref())?)
        } else {
            None
        };
        let tap = snapshot.as_ref().and_then(|s| s.tap());
        let (info, digest, size, unpacked) = solver.write_layer(&self.id, entries, tap)?;
        if let Some(snapshot) = snapshot {
            snapshot.finish(&info.diff_id, unpacked)?;
        }
        let layer = CachedLayer {
            descriptor: Descriptor::new(info.media_type, digest, size),
            diff_id: info.diff_id,
        };
        let record = CacheRecord {
            layer: Some(layer.clone()),
            created: created.clone(),
            same_as: None,
        };
        store.cache.store(&self.id, &inputs, &record)?;
        self.remember(&key, alias, &record)?;
        state.image.push_layer(layer, created_by, created);
        Ok(Outcome::Built {
            reason,
            layer: LayerWork {
                written: info.uncompressed_size,
                compressed: info.size,
                reused: info.reused,
                ms: layer_started.elapsed().as_secs_f64() * 1000.0,
            },
        })
    }
}

/// Build-wide step numbers, in plan order.
fn number_steps(stages: &[Stage]) -> HashMap<(usize, usize), usize> {
    let mut numbers = HashMap::new();
    let mut n = 0;
    for stage in stages {
        for i in 0..stage.steps.len() {
            n += 1;
            numbers.insert((stage.index, i), n);
        }
    }
    numbers
}

#[cfg(test)]
mod tests {
    use crate::test_build::{TestBuild, step};

    const DOCKERFILE: &str = "FROM scratch\nCOPY a.txt /a.txt\nWORKDIR /work\nCOPY b.txt /work/\nENV X=1\n";

    #[test]
    fn a_rebuild_hits_every_step_and_gives_the_same_image() {
        let t = TestBuild::new();
        t.file("a.txt", "a");
        t.file("b.txt", "b");
        let first = t.build(DOCKERFILE);
        assert_eq!((first.metrics.cache_hits, first.metrics.cache_misses), (0, 3));
        let second = t.build(DOCKERFILE);
        assert_eq!((second.metrics.cache_hits, second.metrics.cache_misses), (3, 0));
        assert_eq!(second.image.manifest.digest, first.image.manifest.digest);
        assert_eq!(step(&second, "ENV").cache, "none");
    }

    #[test]
    fn a_changed_file_misses_from_its_step_and_says_why() {
        let t = TestBuild::new();
        t.file("a.txt", "a");
        t.file("b.txt", "b");
        t.build(DOCKERFILE);
        t.file("b.txt", "changed");
        let rebuilt = t.build(DOCKERFILE);
        assert_eq!(step(&rebuilt, "COPY a.txt").cache, "hit");
        assert_eq!(step(&rebuilt, "WORKDIR").cache, "hit");
        let copy = step(&rebuilt, "COPY b.txt");
        assert_eq!(copy.cache, "miss");
        assert_eq!(copy.miss_reason.as_deref(), Some("b.txt: content changed"));
        let fresh = t.build_with(DOCKERFILE, |r| r.no_cache = true).unwrap();
        assert_eq!(fresh.metrics.cache_hits, 0);
        assert_eq!(
            fresh.image.manifest.digest, rebuilt.image.manifest.digest,
            "reproducible"
        );
    }

    #[test]
    fn every_step_is_kept_for_cache_to_marked_whether_the_image_has_it() {
        let t = TestBuild::new();
        t.file("a.txt", "a");
        let text = "FROM scratch AS tools\nCOPY a.txt /tool\nFROM scratch\nCOPY --from=tools /tool /tool\n";
        let output = t.build(text);
        let in_image: Vec<bool> = output.steps.iter().map(|s| s.in_image).collect();
        // The copy from `tools` keeps two keys (by the files and by the stage's key).
        assert_eq!(in_image, [false, true, true], "{:?}", output.steps);
        assert!(output.steps.iter().all(|s| s.record.layer.is_some()));
    }
}
