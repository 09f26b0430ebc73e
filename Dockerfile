# quern: the operator binary (`quern worker`, `quern scheduler`, the CLI) and
# the two example programs, in one small image.
#
#   docker build -t quern .
#   docker run --rm -e REDIS_URL=redis://redis:6379 quern quern stats
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p quern -p quern-examples \
 && mkdir /out \
 && cp target/release/quern target/release/quern-example-web target/release/quern-example-worker /out/

FROM debian:bookworm-slim
# ca-certificates for `command` jobs that call TLS tools; the `http` kind has its own roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin quern
COPY --from=build /out/ /usr/local/bin/
USER quern
# tini forwards SIGTERM to quern (graceful shutdown) and reaps the children of `command` jobs.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["quern", "--help"]
