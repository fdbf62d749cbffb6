//! Benchmark tooling for rbuild. The numbers come from `benches/*.sh`, which run rbuild and the
//! real alternative side by side in one run and print ratios; the binaries here generate load.
