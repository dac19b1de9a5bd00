# syntax=docker/dockerfile:1
#
# One image for every role: `tassis standalone | gateway | keystore | messaging | attachments`.
# The chart (helm/tassis) runs each role from this same image with `args: [<role>]`.
#
#   docker build -t tassis .                  # the runtime image (last stage)
#   docker run --rm -p 8080:8080 -p 9090:9090 tassis            # standalone, embedded backends
#   docker build --target chef -t tassis-toolchain .   # the toolchain the Tiltfile compiles with
#
# Stages:
#   chef     Rust toolchain + cargo-chef (pinned); also the Tilt dev loop's compiler image, so a dev
#            binary links against the same glibc (bookworm) as the runtime image
#   planner  reduces the workspace to a dependency recipe (recipe.json): it changes only when
#            Cargo.toml / Cargo.lock change, so the next stage's layer stays cached across source edits
#   builder  builds the dependencies from the recipe (cached layer), then the `tassis` binary
#   runtime  distroless cc (glibc, CA certificates, no shell), non-root, only the binary

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION
# rust:*-slim already has gcc and libc6-dev (ring's C parts). cmake and perl are there for crates
# that build C libraries with them (aws-lc-sys, pulled in by some AWS SDK configurations).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake perl pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when the recipe (manifests, lock file) changes.
RUN cargo chef cook --release --locked --package tassis --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --package tassis \
 && install -D -m 0755 target/release/tassis /out/tassis

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="tassis" \
      org.opencontainers.image.description="Signal-protocol messaging back end: one binary, one role per subcommand" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/tassis /usr/local/bin/tassis
# distroless :nonroot runs as 65532:65532; said again so the image metadata shows it.
USER 65532:65532
# 8080: the default --listen (WebSocket of gateway and standalone; the chart gives the internal roles
# their own gRPC ports); 9090: the default --admin-listen (/healthz, /readyz, /metrics).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tassis"]
CMD ["standalone"]
