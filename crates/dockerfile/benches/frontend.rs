//! Frontend micro-benchmarks: parsing and planning a large Dockerfile,
//! expanding words, and matching .dockerignore against a large context.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rbuild_dockerfile::dockerignore::Matcher;
use rbuild_dockerfile::expand::Lexer;
use rbuild_dockerfile::{NoResolver, PlanOptions, parse, plan};

/// A ~300-line multi-stage Dockerfile mixing every common instruction.
fn big_dockerfile() -> String {
    let mut out =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm-slim\nARG VERSION=1.0\n");
    for stage in 0..11 {
        out.push_str(&format!("FROM ${{BASE}} AS stage{stage}\n"));
        out.push_str("ARG VERSION\nENV APP_HOME=/srv/app PATH=/srv/app/bin:$PATH\n");
        out.push_str("WORKDIR $APP_HOME\n");
        out.push_str(
            "RUN set -eux; \\\n    apt-get update; \\\n    apt-get install -y --no-install-recommends \\\n        ca-certificates \\\n        curl \\\n        git; \\\n    rm -rf /var/lib/apt/lists/*\n",
        );
        out.push_str("RUN --mount=type=cache,target=/root/.cache,id=cache-$VERSION \\\n    --mount=type=bind,source=go.mod,target=go.mod \\\n    make build VERSION=$VERSION\n");
        out.push_str("COPY --chown=app:app --chmod=0644 config/ ./config/\n");
        if stage > 0 {
            out.push_str(&format!("COPY --from=stage{} /srv/app/bin/ ./bin/\n", stage - 1));
        }
        out.push_str("RUN <<EOF\nset -e\necho \"building ${VERSION}\"\nmake test\nEOF\n");
        out.push_str("LABEL org.opencontainers.image.version=$VERSION maintainer=\"ops@example.com\"\n");
        out.push_str("EXPOSE 8080 9090/udp\nUSER app:app\nVOLUME /data\n");
        out.push_str("HEALTHCHECK --interval=30s CMD curl -f http://localhost:8080/ || exit 1\n");
        out.push_str("ENTRYPOINT [\"/srv/app/bin/server\"]\nCMD [\"--port\", \"8080\"]\n");
    }
    out
}

fn bench_parse_plan(c: &mut Criterion) {
    let text = big_dockerfile();
    let lines = text.lines().count();
    let options = PlanOptions::default();
    c.bench_function(&format!("parse+plan {lines}-line Dockerfile"), |b| {
        b.iter(|| {
            let df = parse(black_box(&text)).expect("benchmark Dockerfile parses");
            plan(&df, &options, &NoResolver).expect("benchmark Dockerfile plans")
        })
    });
}

fn bench_expand(c: &mut Criterion) {
    let env: BTreeMap<String, String> = [
        ("FILE", "archive.tar.gz"),
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("VERSION", "1.2.3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let words = [
        "plain-word-without-variables",
        "$VERSION",
        "${VERSION}-suffix",
        "\"quoted $FILE with spaces\"",
        "${UNSET:-default-value}",
        "${FILE%%.*}",
        "${PATH//:/ }",
        "prefix/${VERSION:+v$VERSION}/suffix",
    ];
    let lexer = Lexer::new('\\');
    c.bench_function("expand 8 words", |b| {
        b.iter(|| {
            for w in &words {
                black_box(lexer.process_word(black_box(w), &env).ok());
            }
        })
    });
}

/// 100,000 paths shaped like a monorepo checkout.
fn context_paths() -> Vec<String> {
    let dirs = [
        "src",
        "pkg/api",
        "pkg/store",
        "node_modules/lodash",
        "docs",
        "build/out",
        ".git/objects",
        "vendor/github.com/x",
    ];
    let files = [
        "main.go",
        "README.md",
        "index.js",
        "data.json",
        "debug.log",
        "notes.tmp",
        "Makefile",
    ];
    (0..100_000)
        .map(|i| {
            let dir = dirs[i % dirs.len()];
            let file = files[(i / dirs.len()) % files.len()];
            format!("{dir}/sub{}/{file}", i % 97)
        })
        .collect()
}

fn bench_dockerignore(c: &mut Criterion) {
    let matcher = Matcher::from_dockerignore(
        ".git\nnode_modules\n**/*.log\n*.tmp\nbuild/\ndocs/**\n!docs/README.md\nvendor\n**/sub1?/*.json\n",
    )
    .expect("benchmark patterns compile");
    let paths = context_paths();
    c.bench_function("dockerignore 100k paths", |b| {
        b.iter(|| {
            paths
                .iter()
                .filter(|p| matcher.matches_or_parent_matches(black_box(p)))
                .count()
        })
    });
}

criterion_group!(benches, bench_parse_plan, bench_expand, bench_dockerignore);
criterion_main!(benches);
