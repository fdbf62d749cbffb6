# rbuild itself: a Rust build stage, then a slim Debian runtime stage that runs as a non-root user.
#
#   rbuild build -t registry.example.com/tools/rbuild:1 --push .
#   docker build -t rbuild .
#
# The image serves the registry by default (`rbuild serve`, data under /var/lib/rbuild); any other
# command runs as `docker run IMAGE build …`. runc is included so `rbuild build` can execute RUN steps.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Built with line tables (the profiling profile), then split: the image ships the stripped
# binary, and rbuild.debug (which the binary names by its GNU debuglink) stays in the
# `debuginfo` stage for crash reports: `docker build --target debuginfo -o out .`.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile profiling --locked -p rbuild \
 && mkdir -p /out \
 && objcopy --only-keep-debug target/profiling/rbuild /out/rbuild.debug \
 && objcopy --strip-debug --add-gnu-debuglink=/out/rbuild.debug target/profiling/rbuild /out/rbuild \
 && chmod 0755 /out/rbuild

FROM scratch AS debuginfo
COPY --from=build /out/rbuild.debug /

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates runc \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
 && groupadd --system --gid 10001 rbuild \
 && useradd --system --uid 10001 --gid rbuild --home-dir /var/lib/rbuild --create-home rbuild
COPY --from=build /out/rbuild /usr/local/bin/rbuild
USER 10001:10001
WORKDIR /var/lib/rbuild
ENV RBUILD_ADDR=0.0.0.0:5000 \
    RBUILD_REGISTRY_ROOT=/var/lib/rbuild/registry
EXPOSE 5000
VOLUME ["/var/lib/rbuild"]
ENTRYPOINT ["rbuild"]
CMD ["serve"]
