# tileserver: on-the-fly WMTS server (Mapnik metatiles cut into Memcached).
# Build: docker build -t tileserver .    Run with memcached: docker compose up
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tileserver ./tileserver
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TILESERVER_HOST=0.0.0.0 \
    TILESERVER_PORT=8080 \
    MEMCACHED_SERVERS=memcached:11211
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /srv/tileserver --create-home tileserver
WORKDIR /srv/tileserver
COPY config ./config
USER tileserver
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/wmts/1.0.0/WMTSCapabilities.xml', timeout=4).status != 200)"
CMD ["tileserver", "serve", "--config", "config/demo.yaml.mako"]
