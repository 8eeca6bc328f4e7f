# A runtime image: the base, the gekko user and a virtualenv with one requirements file
# installed from the wheelhouse (built offline: no network). Tagged by the digest of the
# requirements, it is the parent of the application images (app.Dockerfile), so a code change
# rebuilds only their thin top layers, and no build stage is left behind holding the wheels.
#
#   REQUIREMENTS=app.txt      gekko/runtime:app-<digest>      the gateway and the domain services
#   REQUIREMENTS=signals.txt  gekko/runtime:signals-<digest>  the same plus PyTorch, for the model
ARG BASE_IMAGE=gekko/base:bookworm

# The wheels reach only this stage; the deploy removes it after the build (by its label).
FROM ${BASE_IMAGE} AS install
LABEL gekko.platform/build-stage="runtime-install"
ARG REQUIREMENTS=app.txt
COPY requirements /tmp/requirements
COPY wheels /wheels
# No bytecode here: the application images compile what their servers import (gekko.precompile),
# not all of torch.
RUN python3 -m venv /opt/gekko \
 && /opt/gekko/bin/pip install --no-index --find-links /wheels --no-cache-dir --no-compile \
        -r /tmp/requirements/${REQUIREMENTS} \
 && find /opt/gekko -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
RUN groupadd --system --gid 10001 gekko \
 && useradd --system --uid 10001 --gid gekko --no-create-home --shell /usr/sbin/nologin gekko
COPY --from=install /opt/gekko /opt/gekko
