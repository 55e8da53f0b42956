# syntax=docker/dockerfile:1
# Strata's two images from one build: strata-node (the broker) and strata-operator.
#
#   docker build --target node     -t strata-node:0.1.0 .
#   docker build --target operator -t strata-operator:0.1.0 .
#
# (podman and buildah take the same commands.) The builder is Debian 12 (bookworm), the same
# glibc as the runtime base, which is distroless (glibc, libgcc, CA certificates; no shell, no
# package manager) and runs as the unprivileged user 65532. Nothing else is needed at run time:
# the protobuf contract is compiled by a pure-Rust compiler at build time and TLS is rustls.
#
# Both bases are build arguments, so a machine without access to these registries can build
# from its own: BUILDER needs a Rust toolchain (cargo on PATH), a C compiler, cmake and perl;
# RUNTIME_BASE needs glibc and libgcc of Debian 12 or newer, CA certificates and the user 65532.
# The test bed does this without a Docker engine (tests/testbed/images.sh: podman, bases made
# with debootstrap, the host's toolchain bind-mounted into the builder).

ARG RUST_VERSION=1.95
ARG BUILDER=docker.io/library/rust:${RUST_VERSION}-bookworm
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
# Where the binaries come from: "build" (compiled below) or "prebuilt" (the context's
# .prebuilt/strata-node and .prebuilt/strata-operator, built on a Debian 12 host: the test bed
# reuses its host's release build instead of compiling everything a second time).
ARG BINARIES=build

FROM ${BUILDER} AS build
WORKDIR /src
COPY . .
# The caches keep the registry and the target directory between builds (BuildKit, podman); the
# binaries are copied out of the cache mount before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p strata-node -p strata-operator \
    && mkdir -p /out \
    && cp target/release/strata-node target/release/strata-operator /out/

FROM scratch AS prebuilt
COPY .prebuilt/ /out/

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_BASE} AS node
COPY --from=binaries /out/strata-node /usr/local/bin/strata-node
USER 65532:65532
WORKDIR /home/nonroot
# Kafka (the operator sets the listener, data directory and controller with flags).
EXPOSE 9092
ENTRYPOINT ["/usr/local/bin/strata-node"]

FROM ${RUNTIME_BASE} AS operator
COPY --from=binaries /out/strata-operator /usr/local/bin/strata-operator
USER 65532:65532
WORKDIR /home/nonroot
# Controller gRPC (leader only) and metrics, as the chart configures them.
EXPOSE 9093 8080
ENTRYPOINT ["/usr/local/bin/strata-operator"]
