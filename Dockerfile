# p2pstore node image: one storage node per container.
#
#   docker build -t p2pstore .                                  # installs from PyPI
#   pip wheel . -w wheelhouse && docker build -t p2pstore .     # offline: from ./wheelhouse
#   docker build --build-arg BASE_IMAGE=p2pstore-base:test .    # any Debian-like base with python3 >= 3.11
#
# The base needs python3 with venv and pip (the official python images, or Debian bookworm with
# python3-venv). Everything a node keeps lives in /data: mount a volume there.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Folder (in the build context) of prebuilt wheels: the p2pstore wheel and all its dependencies.
# When it holds a p2pstore wheel, nothing is fetched from the network.
ARG WHEELHOUSE=wheelhouse
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY . /src
RUN set -eu; \
    python3 -m venv /opt/p2pstore; \
    if ls "/src/${WHEELHOUSE}"/p2pstore-*.whl >/dev/null 2>&1; then \
        /opt/p2pstore/bin/pip install --no-index --find-links "/src/${WHEELHOUSE}" p2pstore; \
    else \
        /opt/p2pstore/bin/pip install /src; \
    fi; \
    /opt/p2pstore/bin/p2pstore --help >/dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="p2pstore" \
      org.opencontainers.image.description="Peer-to-peer, self-healing, triple-replicated file store node"
COPY --from=build /opt/p2pstore /opt/p2pstore
RUN set -eu; \
    useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin p2pstore; \
    mkdir -p /data; \
    chown p2pstore:p2pstore /data; \
    chmod 0750 /data
ENV PATH=/opt/p2pstore/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    P2PSTORE_HOST=0.0.0.0 \
    P2PSTORE_PORT=7000 \
    P2PSTORE_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7000
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('P2PSTORE_PORT', '7000'), timeout=3)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["p2pstore"]
CMD ["node", "start"]
