# tileserver: on-the-fly WMTS server (Mapnik metatiles cut into Memcached).
# Build: docker build -t tileserver .    Run with Memcached: docker compose up
# The image also has generate_tiles and generate_controller (docker compose run --rm tileserver ...).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tileserver ./tileserver
# Wheels of tileserver and of every dependency (the mapnik wheel carries Mapnik and its fonts).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TILESERVER_HOST=0.0.0.0 \
    TILESERVER_PORT=8080 \
    TILESERVER_TILES=/srv/tileserver/tiles \
    MEMCACHED_SERVERS=memcached:11211
COPY --from=build /wheels /wheels
# --no-index: only the wheels built above, nothing fetched at this stage.
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /srv/tileserver --create-home tileserver \
    && install -d -o tileserver -g tileserver /srv/tileserver/tiles
WORKDIR /srv/tileserver
COPY config ./config
USER tileserver
EXPOSE 8080
# /health: the process answers (liveness); the port follows TILESERVER_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('TILESERVER_PORT', '8080'), timeout=4)"]
CMD ["tileserver", "serve", "--config", "config/demo.yaml.mako"]
