# syntax=docker/dockerfile:1
# she's container images (k8s/README.md):
#   she        (target runtime-cpu)   Debian 12 slim, the CPU build: every component
#   she-cuda   (target runtime-cuda)  CUDA runtime base, the CUDA build (cuBLAS, NCCL): the GPU
#                                     learner, and rollout / serve / evaluate with <cmd>.device=cuda
#   docker build --target runtime-cpu  -t she .
#   docker build --target runtime-cuda -t she-cuda .
# Both run as uid 10001 (the manifests' runAsUser) with `she` as the entrypoint.  The builds
# bundle the shared libraries `she` links (ldd) next to it, so the runtime stages need no
# -dev packages and no package names of their own; glibc, and on CUDA the CUDA libraries,
# come from the runtime base (libcublas is not linked: `she` opens it the first time a model
# goes to a GPU, by its soname, which the base image's loader path finds).
ARG CUDA_VERSION=12.6.3
ARG CUDA_OS=ubuntu24.04

# ---- CPU build: the packages of scripts/install-deps.sh that the build needs ----
FROM debian:12 AS build-cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      librdkafka-dev libavro-dev libjansson-dev libopenblas-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No MPI in the images: under Kubernetes the ranks meet over TCP (and NCCL), never mpirun.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DSHE_CUDA=OFF -DSHE_MPI=OFF \
 && cmake --build /build --target she -j"$(nproc)" \
 && install -D -m 0755 /build/she /opt/she/bin/she \
 && mkdir -p /opt/she/lib \
 && ldd /opt/she/bin/she | awk '$3 ~ /^\// {print $3}' \
      | grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' \
      | xargs -r cp -L -t /opt/she/lib

# ---- CUDA build: the same on NVIDIA's devel image (nvcc, cuBLAS, NCCL) ----
FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_OS} AS build-cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      librdkafka-dev libavro-dev libjansson-dev libopenblas-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# CMAKE_CUDA_ARCHITECTURES defaults to 80;90 (A100, H100) in CMakeLists.txt; pass
# --build-arg CUDA_ARCHS=... for other GPUs.
ARG CUDA_ARCHS=80;90
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DSHE_CUDA=ON -DSHE_MPI=OFF \
      "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS}" \
 && cmake --build /build --target she -j"$(nproc)" \
 && install -D -m 0755 /build/she /opt/she/bin/she \
 && mkdir -p /opt/she/lib \
 && ldd /opt/she/bin/she | awk '$3 ~ /^\// {print $3}' \
      | grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libcuda|libcudart|libcublas[^/]*|libnccl)\.so' \
      | xargs -r cp -L -t /opt/she/lib

# ---- runtime images ----
FROM debian:12-slim AS runtime-cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 10001 she && useradd -u 10001 -g she -M -d /nonexistent -s /usr/sbin/nologin she
COPY --from=build-cpu /opt/she /opt/she
ENV PATH=/opt/she/bin:$PATH LD_LIBRARY_PATH=/opt/she/lib
USER 10001:10001
ENTRYPOINT ["she"]
CMD ["help"]

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${CUDA_OS} AS runtime-cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 10001 she && useradd -u 10001 -g she -M -d /nonexistent -s /usr/sbin/nologin she
COPY --from=build-cuda /opt/she /opt/she
# LD_LIBRARY_PATH keeps the base image's CUDA libraries (/usr/local/cuda/lib64, NCCL) visible.
ENV PATH=/opt/she/bin:$PATH LD_LIBRARY_PATH=/opt/she/lib:/usr/local/nvidia/lib64:/usr/local/cuda/lib64
USER 10001:10001
ENTRYPOINT ["she"]
CMD ["help"]
