# syntax=docker/dockerfile:1
# The node-agent image, for hosts with Docker/BuildKit (without Docker: images/build.sh).
# Build from the repository root (the context; .dockerignore keeps target/ out):
#   docker build -f images/node-agent.Dockerfile -t microsandbox/node-agent:0.1.0 --build-arg VERSION=0.1.0 .
# Build args:
#   LIBKRUN=auto   install Debian's libkrun1 (microVM isolation) if the runtime base's suite
#                  ships it, else go on without; yes: require it; no: never install it.
#                  Debian bookworm has no libkrun, so this base gives container isolation only
#                  unless libkrun and libkrunfw are added (images/build.sh --add-lib does that).
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

FROM debian:bookworm-slim
ARG VERSION=dev
ARG LIBKRUN=auto
LABEL org.opencontainers.image.source="https://github.com/microsandbox/microsandbox" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.title="microsandbox-node-agent"
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates libssl3 crun iproute2 nftables; \
    if [ "$LIBKRUN" != no ]; then \
      if apt-cache show --no-all-versions libkrun1 2>/dev/null | grep -q '^Package: libkrun1$'; then \
        apt-get install -y --no-install-recommends libkrun1; \
      elif [ "$LIBKRUN" = yes ]; then \
        echo "LIBKRUN=yes but this Debian suite has no libkrun1" >&2; exit 1; \
      else \
        echo "libkrun1 not in this Debian suite: microVM isolation needs libkrun added separately"; \
      fi; \
    fi; \
    rm -rf /var/lib/apt/lists/*
# The agent finds the guest agent next to its own executable.
COPY --from=build /out/microsandbox-agent /out/microsandbox-guest /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/microsandbox-agent"]
