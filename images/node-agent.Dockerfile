# syntax=docker/dockerfile:1
# The node-agent image, for hosts with Docker/BuildKit (without Docker: images/build.sh).
# Build from the repository root (the context; .dockerignore keeps target/ out):
#   docker build -f images/node-agent.Dockerfile -t microsandbox/node-agent:0.1.0 --build-arg VERSION=0.1.0 .
# The microVM runtime comes with it: libkrun built from the crates.io crate and libkrunfw from
# Debian's package, both pinned and checksummed by scripts/libkrun.sh (the same recipe
# images/build.sh uses); the last step runs `microsandbox-agent doctor` and fails the build
# unless both load.
# amd64 only: the guest agent is built for x86_64-unknown-linux-gnu.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p microsandbox-agent \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p microsandbox-guest --target x86_64-unknown-linux-gnu \
 && install -D -m 0755 target/release/microsandbox-agent /out/microsandbox-agent \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/microsandbox-guest /out/microsandbox-guest
# libkrun.so.1 + libkrunfw.so.5 into /out/lib (cargo builds libkrun; apt fetches libkrunfw).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/root/.cache/microsandbox \
    scripts/libkrun.sh --out /out/lib

FROM debian:bookworm-slim
ARG VERSION=dev
LABEL org.opencontainers.image.source="https://github.com/microsandbox/microsandbox" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.title="microsandbox-node-agent"
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates libssl3 crun iproute2 nftables; \
    rm -rf /var/lib/apt/lists/*
COPY --from=build /out/lib/ /usr/local/lib/
RUN ldconfig
# The agent finds the guest agent next to its own executable.
COPY --from=build /out/microsandbox-agent /out/microsandbox-guest /usr/local/bin/
RUN out=$(/usr/local/bin/microsandbox-agent doctor || true); echo "$out"; \
    echo "$out" | grep -Eq '^ok +libkrun ' && echo "$out" | grep -Eq '^ok +libkrunfw ' \
      || { echo "doctor: libkrun or libkrunfw does not load in this image" >&2; exit 1; }
ENTRYPOINT ["/usr/local/bin/microsandbox-agent"]
