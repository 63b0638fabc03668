# emailverify: multi-stage build. Needs no network at build time beyond crates.io
# (protos are compiled by protox, in Rust; no protoc download).
#   docker build -t emailverify .
#   docker run -p 50051:50051 -p 8080:8080 -e DATABASE_URL=postgres://… emailverify

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Download crates in their own layer, so editing src/ does not fetch them again.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo fetch --locked \
    && rm -r src
COPY build.rs ./
COPY proto proto
COPY migrations migrations
COPY src src
RUN cargo build --locked --release --bin emailverify \
    && strip target/release/emailverify

FROM debian:bookworm-slim AS runtime
# CA roots for SMTPS/STARTTLS relays and TLS to Postgres; nothing else.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/emailverify --create-home emailverify
COPY --from=build /src/target/release/emailverify /usr/local/bin/emailverify
USER 10001:10001
WORKDIR /var/lib/emailverify
# In a container the service must listen beyond loopback; the public URL is the
# address people's browsers reach (set it to your domain).
ENV EMAILVERIFY_GRPC_ADDR=0.0.0.0:50051 \
    EMAILVERIFY_HTTP_ADDR=0.0.0.0:8080 \
    EMAILVERIFY_ADMIN_ADDR=0.0.0.0:9464 \
    EMAILVERIFY_LOG_FORMAT=json
# 50051 gRPC, 8080 link pages, 9464 admin (metrics, health): keep 9464 off the public ingress.
EXPOSE 50051 8080 9464
ENTRYPOINT ["/usr/local/bin/emailverify"]
CMD ["serve"]
