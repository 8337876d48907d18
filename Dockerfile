# syntax=docker/dockerfile:1
# upcache: multi-stage build. The builder compiles the release binary; the runtime image is
# Debian slim with CA certificates, the binary and a non-root user. `docker compose up` (see
# docker-compose.yml) runs three of these behind the nginx gateway.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache the registry and target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin upcache \
    && install -m 0755 target/release/upcache /usr/local/bin/upcache

FROM debian:bookworm-slim
# CA certificates for https upstreams; nothing else.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/cache/upcache --shell /usr/sbin/nologin upcache \
    && mkdir -p /var/cache/upcache \
    && chown upcache:upcache /var/cache/upcache
COPY --from=build /usr/local/bin/upcache /usr/local/bin/upcache

# Every setting can be overridden the same way (UPCACHE__<SECTION>__<KEY>) or with a config
# file mounted and named by UPCACHE_CONFIG.
ENV UPCACHE__SERVER__LISTEN=0.0.0.0:8080 \
    UPCACHE__STORAGE__DATA_DIR=/var/cache/upcache

USER upcache
WORKDIR /var/cache/upcache
VOLUME ["/var/cache/upcache"]
EXPOSE 8080

# Ready = the index answers and the volume accepts writes (GET /readyz). bash's /dev/tcp keeps
# an HTTP client out of the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["/usr/local/bin/upcache"]
CMD ["serve"]
