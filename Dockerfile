# The `msd` binary with libtorch taken from the PyPI torch wheel, exactly as
# scripts/setup-libtorch.sh does on a developer machine (the wheel carries CUDA: the same image
# runs on CPU nodes and, with the NVIDIA container runtime, on GPU nodes).
#
#   docker build -t msd:0.1 .
#   docker run --rm -v "$PWD/runs/r:/msd/run" msd:0.1 msd distill --run /msd/run --student 0
#   docker run --rm --gpus all ... msd distill --run /msd/run --student 0 --device cuda
#
# Kubernetes: `msd launch k8s --image <registry>/msd:0.1 --volume <claim> --run R` writes Jobs
# that run this image (docs/cluster.md).
ARG TORCH_VERSION=2.11.0

FROM rust:1-bookworm AS build
ARG TORCH_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
ENV MSD_TORCH_HOME=/opt/msd MSD_TORCH_VERSION=${TORCH_VERSION}
WORKDIR /src
# libtorch first (a layer of its own, ~5 GB, reused while only the sources change).
COPY scripts/setup-libtorch.sh scripts/with-torch.sh scripts/
RUN scripts/setup-libtorch.sh
COPY . .
RUN scripts/with-torch.sh cargo build --release -p msd-cli \
 && install -m 0755 target/release/msd /usr/local/bin/msd

FROM debian:bookworm-slim
ARG TORCH_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The binary finds libtorch through the rpath baked in at build time: keep the same path.
COPY --from=build /opt/msd /opt/msd
COPY --from=build /usr/local/bin/msd /usr/local/bin/msd
RUN msd --version
WORKDIR /msd
# SIGTERM reaches msd directly (no shell in between): it checkpoints and exits with status 75.
CMD ["msd", "--help"]
