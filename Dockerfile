# wallet-worker container image.
# Build stage: the same steps CI runs (cmake configure + build of the worker);
# runtime stage: only the shared libraries the binary links, a non-root user,
# and a health check on the liveness endpoint.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config librdkafka-dev libmongoc-dev libbson-dev \
      libjson-c-dev libmicrohttpd-dev libcmocka-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY src ./src
COPY worker ./worker
COPY tests ./tests
COPY bench ./bench
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWW_BUILD_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target wallet-worker \
 && strip build/wallet-worker

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka1 libmongoc-1.0-0 libbson-1.0-0 libjson-c5 libmicrohttpd12 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wallet
COPY --from=build /src/build/wallet-worker /usr/local/bin/wallet-worker
USER 10001
ENV HTTP_ADDR=0.0.0.0:8080
# libmongoc's shared-memory counters (/dev/shm/mongoc-<pid>) serve only its mongoc-stat
# tool; a killed worker leaves the file behind, and a later process with the same pid
# warns about it before main. Off.
ENV MONGOC_DISABLE_SHM=1
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/livez || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/wallet-worker"]
CMD ["run"]
