//! The local store's images: `rbuild images`, `inspect`, `pull`, `push`, `cache du|prune`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use rbuild_builder::export::{Output, export, shipped};
use rbuild_layer::LayerOptions;
use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::ImageManifest;
use rbuild_oci::store::REF_NAME;
use rbuild_oci::{ContentStore, Descriptor, Digest};

use crate::args::CompressionArgs;
use crate::store::{StoreArgs, reference, runtime};

/// `rbuild images`.
#[derive(Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// `rbuild inspect REF`.
#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The image
    image: String,
}

/// `rbuild push REF`.
#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    compression: CompressionArgs,
    /// The image
    image: String,
}

/// `rbuild pull REF`.
#[derive(Args)]
pub struct PullArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The platform to pull
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// The image
    image: String,
}

/// `rbuild cache …`.
#[derive(Subcommand)]
pub enum CacheCommand {
    /// Show how much space the store uses.
    Du(ImagesArgs),
    /// Remove the build cache, snapshots and every blob no named image uses.
    Prune(ImagesArgs),
}

fn load<T: serde::de::DeserializeOwned>(store: &ContentStore, digest: &Digest) -> anyhow::Result<T> {
    let bytes = store.read(digest)?;
    rbuild_oci::json::from_slice(&bytes).with_context(|| format!("parsing {digest}"))
}

fn named(store: &ContentStore, name: &str) -> anyhow::Result<Descriptor> {
    let full = reference(name)?.to_string();
    store
        .resolve_ref(&full)?
        .with_context(|| format!("no image named {full} in the local store (see `rbuild images`)"))
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

pub fn images(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?.content;
    println!("{:<50} {:<19} {:>10}", "NAME", "DIGEST", "SIZE");
    for entry in store.index()?.manifests {
        let name = entry.annotations.get(REF_NAME).cloned().unwrap_or_default();
        let size = load::<ImageManifest>(&store, &entry.digest)
            .map(|m| m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>())
            .unwrap_or(0);
        println!(
            "{name:<50} {:<19} {:>10}",
            &entry.digest.to_string()[..19],
            human(size)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?.content;
    let descriptor = named(&store, &args.image)?;
    let manifest: ImageManifest = load(&store, &descriptor.digest)?;
    let config: ImageConfig = load(&store, &manifest.config.digest)?;
    let report = serde_json::json!({
        "name": reference(&args.image)?.to_string(),
        "digest": descriptor.digest,
        "manifest": manifest,
        "config": config,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?.content;
    let client = args.store.client()?;
    let image_ref = reference(&args.image)?;
    let platform = rbuild_client::platform::parse(&args.platform)?;
    let image = runtime()?.block_on(client.pull(&image_ref, &platform, &store))?;
    store.set_ref(&image_ref.to_string(), &image.manifest_descriptor)?;
    println!("{image_ref}@{}", image.digest());
    Ok(ExitCode::SUCCESS)
}

pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let local = args.store.open()?;
    let store = &local.content;
    let client = args.store.client()?;
    let image_ref = reference(&args.image)?;
    let descriptor = named(store, &args.image)?;
    let layers = LayerOptions {
        compression: args.compression.shipped(),
        ..LayerOptions::default()
    };
    let outputs = [Output::Registry];
    let descriptor = shipped(&local, &descriptor, &outputs, &layers)?;
    let exported = runtime()?.block_on(export(
        &local,
        &client,
        &descriptor,
        std::slice::from_ref(&image_ref),
        &outputs,
    ))?;
    for report in &exported.pushed {
        eprintln!(
            "pushed {} ({} bytes uploaded)",
            report.reference,
            report.bytes_uploaded()
        );
        println!("{}", report.reference);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cache(command: CacheCommand) -> anyhow::Result<ExitCode> {
    match command {
        CacheCommand::Du(args) => {
            let usage = args.store.open()?.usage()?;
            println!("{:<12} {:>10}", "blobs", human(usage.blobs));
            println!("{:<12} {:>10}", "snapshots", human(usage.snapshots));
            println!(
                "{:<12} {:>10}  ({} cached steps)",
                "cache index",
                human(usage.cache_index),
                usage.cached_steps
            );
            println!("{:<12} {:>10}", "total", human(usage.total));
        }
        CacheCommand::Prune(args) => {
            let freed = args.store.open()?.prune()?;
            println!(
                "freed {} of blobs; cache index and snapshots cleared",
                human(freed)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
