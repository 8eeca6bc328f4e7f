# The Gekko platform images: one image, one command per component (`gekko serve <component>`),
# built offline on a runtime image (roles/app_image, app/images/runtime-install.sh) that already
# holds the dependencies.
#
#   target app      on gekko/runtime:app-<digest>:      the gateway, the domain services and migrations
#   target signals  on gekko/runtime:signals-<digest>:  the signals service, with PyTorch and its model
ARG RUNTIME_IMAGE=gekko/runtime:latest

FROM ${RUNTIME_IMAGE} AS app
COPY app-wheel /tmp/app-wheel
COPY check-dependencies.sh /tmp/check-dependencies.sh
# The root file system is read-only at run time: the bytecode of what the servers import is
# written now, or every start (and every health check) compiles it again. The wheel goes in
# without its dependencies (the runtime has them): check-dependencies.sh fails the build, naming
# the conflict, if they do not agree.
RUN /opt/gekko/bin/pip install --no-index --no-cache-dir --no-deps /tmp/app-wheel/gekko-*.whl \
 && sh /tmp/check-dependencies.sh /opt/gekko \
 && rm -rf /tmp/app-wheel /tmp/check-dependencies.sh \
 && /opt/gekko/bin/python -m gekko.precompile
# Docker's health check, every few seconds in every container: gekko/healthprobe.py as a script
# on the standard library alone (-I -S: no site-packages, no gekko package), about 15 ms.
RUN probe="$(/opt/gekko/bin/python -c 'import gekko.healthprobe as p; print(p.__file__)')" \
 && { echo '#!/opt/gekko/bin/python3 -IS'; cat "$probe"; } > /opt/gekko/bin/gekko-healthcheck \
 && chmod 0755 /opt/gekko/bin/gekko-healthcheck
# The containers run with a read-only root and a tmpfs /tmp.
ENV PATH=/opt/gekko/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["gekko-healthcheck"]
ENTRYPOINT ["gekko"]
CMD ["serve", "gateway"]

# Weights are trained here from seeded generated prices (never downloaded): deterministic and
# a few seconds on one core. torch's caches go to the tmpfs /tmp.
FROM app AS signals
USER root
RUN gekko train-signal-model --out /opt/gekko-model/signal-model.pt \
 && /opt/gekko/bin/python -m gekko.precompile
ENV GEKKO_SIGNAL_MODEL_PATH=/opt/gekko-model/signal-model.pt \
    TORCH_HOME=/tmp/torch \
    XDG_CACHE_HOME=/tmp/.cache
USER 10001:10001
CMD ["serve", "signals"]
