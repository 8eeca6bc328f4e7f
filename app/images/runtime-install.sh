#!/bin/sh
# A runtime image's one step, run by the deploy (roles/app_image) in a container of the base
# image that is then committed as gekko/runtime:<requirements>-<digest>: the gekko user and a
# virtualenv with one requirements file ($1, app.txt or signals.txt) installed from the
# wheelhouse. The build context is mounted read-only on /mnt and the container has no network,
# so the wheels never enter a layer and nothing is fetched. One container and one commit: a
# Dockerfile needs an install stage and a COPY of its virtualenv, two commits of the same
# 850 MB for the signals runtime (BuildKit's RUN --mount would avoid that; Debian's engine has
# no BuildKit client).
#
#   app.txt      gekko/runtime:app-<digest>      the gateway and the domain services
#   signals.txt  gekko/runtime:signals-<digest>  the same plus PyTorch, for the model
set -eu
groupadd --system --gid 10001 gekko
useradd --system --uid 10001 --gid gekko --no-create-home --shell /usr/sbin/nologin gekko
python3 -m venv /opt/gekko
# No bytecode here: the application images compile what their servers import (gekko.precompile),
# not all of torch.
/opt/gekko/bin/pip install --quiet --disable-pip-version-check --no-index --no-cache-dir \
    --no-compile --find-links /mnt/wheels -r "/mnt/requirements/$1"
find /opt/gekko -name '__pycache__' -prune -exec rm -rf {} +
# PyTorch's wheel carries what only building or testing against it needs: C++ headers (62 MB),
# C++ test binaries (83 MB) and test and protobuf tools in bin/ (50 MB). The runtime keeps
# torch_shm_manager alone of bin/.
torch="$(/opt/gekko/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch"
rm -rf "$torch/include" "$torch/test"
if [ -d "$torch/bin" ]; then
    find "$torch/bin" -mindepth 1 -maxdepth 1 ! -name torch_shm_manager -exec rm -rf {} +
fi
