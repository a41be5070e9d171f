# ecr-audit container image: a Rust build stage, then only the binary on distroless.
#
#   docker build -t ecr-audit .
#   docker run --rm -e DATABASE_URL=... -e ECR_AUDIT_QUEUE_URL=... ecr-audit            # the worker
#   docker run --rm -e DATABASE_URL=... ecr-audit migrate
#
# The database migrations are compiled into the binary (sqlx::migrate! in src/store/mod.rs),
# so `ecr-audit migrate` needs nothing else from the image. See docs/DEPLOY.md.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src

# Dependencies first, against empty sources: this layer is reused until Cargo.toml or
# Cargo.lock change. aws-lc-sys (TLS) builds with the image's C compiler; no cmake needed.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin ecr-audit \
 && rm -rf src

COPY build.rs ./
COPY src ./src
COPY migrations ./migrations
# COPY keeps the files' own modification times, which may be older than the placeholder
# build above: touch them so cargo rebuilds the crate (and re-reads migrations/).
RUN touch src/lib.rs src/main.rs \
 && cargo build --release --locked --bin ecr-audit \
 && install -D -m 0555 target/release/ecr-audit /out/ecr-audit

# ---------------------------------------------------------------- runtime
# distroless "cc": glibc, libgcc and CA certificates, no shell, no package manager. The
# :nonroot variant's default user is 65532; set explicitly below so that orchestrators
# checking runAsNonRoot see a numeric user.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="ecr-audit" \
      org.opencontainers.image.description="Event-driven compliance auditor for Amazon ECR" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/ecr-audit /ecr-audit

# Reachable by Prometheus from outside the container (the binary's own default is
# 127.0.0.1), and JSON logs for the log driver; both can be overridden at run time.
ENV ECR_AUDIT_HTTP_ADDR=0.0.0.0:9464 \
    ECR_AUDIT_LOG_FORMAT=json
EXPOSE 9464

USER 65532:65532

# No shell or HTTP client exists in the image to probe /healthz from inside, and ECS and
# Kubernetes use their own checks (see docs/DEPLOY.md, Health and monitoring).
HEALTHCHECK NONE

ENTRYPOINT ["/ecr-audit"]
CMD ["worker"]
