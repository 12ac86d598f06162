# Build stage: the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# libpcap-dev: libpcap.a, linked statically (packet filters); nothing of it is needed at run time.
RUN bash scripts/build-deps.sh && cargo build --release --locked -p packetcapture-api

# Runtime: distroless, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/packetcapture-api /usr/bin/packetcapture-api
USER 1001:1001
EXPOSE 8444 9091
ENTRYPOINT ["/usr/bin/packetcapture-api"]
