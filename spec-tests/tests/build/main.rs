//! `rbuild build` against `docker build` (BuildKit) and real clients.
//!
//! Differential tests build the same fixture with both and compare what a container sees:
//! the file tree (paths, types, modes, owners, link targets, contents — not timestamps) and
//! the run configuration. Fixtures live in `fixtures/build/`.

mod add;
mod bake;
mod cache;
mod check;
mod corpus;
mod differential;
mod dockerignore;
mod outputs;
mod placement;
mod producers;
mod remote_cache;
mod run;
mod self_image;
mod support;
mod terminal;
