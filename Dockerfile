# syntax=docker/dockerfile:1.7
# One image with the six Marketplace binaries (cart, customer, inventory,
# notification, order, vendor). Migrations and templates are compiled in.
#
#   docker build -t marketplace:dev .
#   docker run --rm marketplace:dev customer --help
#
# The command picks the service: `customer` (serve), `customer migrate`,
# `customer rabbitmq-user --user customer`, `inventory dlq list`, ...

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The dist profile: release with thin LTO (Cargo.toml), for images.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY services ./services
COPY tests ./tests
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked \
        -p cart -p customer -p inventory -p notification -p order -p vendor --bins \
    && mkdir -p /out \
    && for bin in cart customer inventory notification order vendor; do \
        cp "target/dist/$bin" /out/; \
    done

# -------------------------------------------------------------- runtime
# Debian slim (not distroless) so the compose health checks can use bash's
# /dev/tcp without adding curl; ~30 MB of binaries on top.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 marketplace \
    && useradd --system --uid 10001 --gid marketplace --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin marketplace
COPY --from=build /out/ /usr/local/bin/
COPY deploy/docker/healthcheck.sh /usr/local/bin/healthcheck
COPY deploy/docker/entrypoint.sh /usr/local/bin/mp-entrypoint
# Numeric user so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
ENV LOG_FORMAT=json
# Each service listens on its own port (customer 5000, order 5001, notification
# 5002, inventory 5003, vendor 5004, cart 5005); LISTEN_ADDR overrides it.
EXPOSE 5000 5001 5002 5003 5004 5005
# tini reaps and forwards signals; mp-entrypoint turns NAME_FILE secrets into NAME.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/mp-entrypoint"]
CMD ["customer"]
