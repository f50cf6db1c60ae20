# syntax=docker/dockerfile:1
# The operator image, for hosts with Docker/BuildKit (without Docker: images/build.sh).
# Build from the repository root (the context; .dockerignore keeps target/ out):
#   docker build -f images/operator.Dockerfile -t microsandbox/operator:0.1.0 --build-arg VERSION=0.1.0 .
# amd64 only (as the node-agent image).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is copied out of target/.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p microsandbox-operator \
 && install -D -m 0755 target/release/microsandbox-operator /out/microsandbox-operator

# glibc, libgcc, libssl3 and CA certificates; user nonroot = 65532:65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.source="https://github.com/microsandbox/microsandbox" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.title="microsandbox-operator"
COPY --from=build /out/microsandbox-operator /usr/local/bin/microsandbox-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/microsandbox-operator"]
