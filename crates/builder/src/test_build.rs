//! Whole builds inside the crate's unit tests: a fresh store, no network (every base is
//! `scratch` or an image the test put in the store), no RUN (no runtime), so that what the
//! solver and the step kinds promise is checked where they live.

use std::path::Path;
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};
use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::{ImageManifest, Platform};
use rbuild_oci::{ContentStore, Descriptor, Digest, Reference};

use crate::error::{BuildError, Result};
use crate::metrics::StepMetrics;
use crate::progress::Silent;
use crate::remote::Remote;
use crate::store::LocalStore;
use crate::{BuildOutput, BuildRequest, Builder};

/// A network that is not there: a test that reaches it fails, naming what it wanted.
struct Offline;

fn offline(what: String) -> BuildError {
    BuildError::Unresolved(format!("{what} (unit tests have no network)"))
}

impl Remote for Offline {
    fn pull<'a>(
        &'a self,
        reference: &'a Reference,
        _: &'a Platform,
        _: &'a ContentStore,
    ) -> BoxFuture<'a, Result<(Descriptor, ImageManifest, ImageConfig)>> {
        async move { Err(offline(reference.to_string())) }.boxed()
    }

    fn download<'a>(&'a self, url: &'a str, _: &'a Path) -> BoxFuture<'a, Result<(Digest, Option<i64>)>> {
        async move { Err(offline(url.to_owned())) }.boxed()
    }

    fn fetch_artifact<'a>(
        &'a self,
        reference: &'a Reference,
    ) -> BoxFuture<'a, Result<rbuild_client::Artifact>> {
        async move { Err(offline(reference.to_string())) }.boxed()
    }

    fn fetch_blobs<'a>(
        &'a self,
        reference: &'a Reference,
        _: &'a [Descriptor],
        _: &'a ContentStore,
    ) -> BoxFuture<'a, Result<()>> {
        async move { Err(offline(reference.to_string())) }.boxed()
    }

    fn missing_blobs<'a>(
        &'a self,
        reference: &'a Reference,
        _: &'a [Descriptor],
    ) -> BoxFuture<'a, Result<Vec<Descriptor>>> {
        async move { Err(offline(reference.to_string())) }.boxed()
    }
}

/// A store and a context directory of the test's own.
pub(crate) struct TestBuild {
    builder: Builder,
    runtime: tokio::runtime::Runtime,
    /// The context.
    pub context: tempfile::TempDir,
    _store: tempfile::TempDir,
}

impl TestBuild {
    pub(crate) fn new() -> TestBuild {
        let store = tempfile::tempdir().expect("store dir");
        let local = LocalStore::open(store.path()).expect("store opens");
        TestBuild {
            builder: Builder::new(local, Arc::new(Offline)),
            runtime: tokio::runtime::Runtime::new().expect("runtime"),
            context: tempfile::tempdir().expect("context dir"),
            _store: store,
        }
    }

    /// Writes a file of the context.
    pub(crate) fn file(&self, path: &str, content: &str) {
        let path = self.context.path().join(path);
        std::fs::create_dir_all(path.parent().expect("inside the context")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    pub(crate) fn store(&self) -> &LocalStore {
        self.builder.store()
    }

    /// Builds `dockerfile` with `edit` applied to the request.
    pub(crate) fn build_with(
        &self,
        dockerfile: &str,
        edit: impl FnOnce(&mut BuildRequest),
    ) -> Result<BuildOutput> {
        let mut request = BuildRequest {
            dockerfile: self.context.path().join("Dockerfile"),
            dockerfile_text: dockerfile.to_owned(),
            context: self.context.path().to_owned(),
            build_args: Default::default(),
            target: None,
            no_cache: false,
            pull: false,
            no_cache_filter: Vec::new(),
            labels: Default::default(),
            platform: "linux/amd64".to_owned(),
            named_contexts: Default::default(),
            layer_options: rbuild_layer::LayerOptions {
                source_date_epoch: Some(1_700_000_000),
                ..Default::default()
            },
            secrets: Default::default(),
            ssh: None,
            network: "default".to_owned(),
            runtime: None,
            snapshotter: None,
            cache_from: Vec::new(),
            complete_image: false,
        };
        edit(&mut request);
        self.runtime
            .block_on(self.builder.build(request, Arc::new(Silent)))
    }

    /// Builds `dockerfile`, which must succeed.
    pub(crate) fn build(&self, dockerfile: &str) -> BuildOutput {
        self.build_with(dockerfile, |_| {}).expect("the build succeeds")
    }
}

/// The step of `output` whose instruction starts with `prefix`.
pub(crate) fn step<'a>(output: &'a BuildOutput, prefix: &str) -> &'a StepMetrics {
    output
        .metrics
        .steps
        .iter()
        .find(|s| s.instruction.starts_with(prefix))
        .unwrap_or_else(|| panic!("no step {prefix}"))
}

/// The Dockerfile line a build error names and its cause (through a stage task's sharing).
pub(crate) fn located(error: &BuildError) -> (usize, &BuildError) {
    match error {
        BuildError::Shared(shared) => located(shared),
        BuildError::Step { line, cause, .. } => (*line, cause),
        other => panic!("not located: {other}"),
    }
}
