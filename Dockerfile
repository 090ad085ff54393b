# The slo-guard image the Helm chart runs: the binary as ENTRYPOINT, as UID 65532.
#   docker build -t ghcr.io/slo-guard/slo-guard:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin slo-guard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/slo-guard /slo-guard
USER 65532:65532
ENTRYPOINT ["/slo-guard"]
