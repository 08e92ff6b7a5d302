# Agora in a container: a release build in a Rust image, then only the
# stripped binary in a small Debian image, run as an unprivileged user.
#
#   docker build -t agora .
#   docker run --rm -p 50051:50051 -p 9464:9464 agora
#
# serves the demo mesh (generated at first start, in /var/lib/agora) on
# 0.0.0.0:50051 with metrics and health on :9464. For your own mesh, mount it
# and run `serve`:
#
#   docker run --rm -p 50051:50051 -v /srv/mesh:/mesh:ro -v agora-state:/var/lib/agora agora \
#     serve --config /mesh/mesh.yaml --bind 0.0.0.0:50051 --metrics-bind 0.0.0.0:9464
#
# (state the server writes, such as the audit log, the query history and
# lineage files, must be on a writable volume: point their paths there.)

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin agora \
 && strip --strip-unneeded target/release/agora \
 && cp target/release/agora /usr/local/bin/agora

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/agora --create-home agora
COPY --from=build /usr/local/bin/agora /usr/local/bin/agora
USER 10001:10001
WORKDIR /var/lib/agora
VOLUME ["/var/lib/agora"]
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/agora"]
CMD ["demo", "--dir", "/var/lib/agora/demo-mesh", "--bind", "0.0.0.0:50051", "--metrics-bind", "0.0.0.0:9464"]
