# x402-reseller: one image for the gateway and its migrations.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY sandbox ./sandbox
RUN pip install --quiet . && useradd --system --uid 10001 gateway
USER gateway
EXPOSE 8402
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8402/healthz').status != 200)"
CMD ["x402-reseller", "serve", "--host", "0.0.0.0", "--port", "8402"]
