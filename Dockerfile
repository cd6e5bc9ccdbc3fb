# x402-reseller: the gateway image. The same steps as `make installed-check` in CI: build the
# wheel, install it into a fresh venv, run from a directory that is not the checkout.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m pip wheel --quiet --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
COPY --from=build /dist /dist
RUN python -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install --quiet /dist/*.whl \
    && rm -rf /dist \
    && useradd --system --uid 10001 gateway
WORKDIR /srv
USER gateway
EXPOSE 8402
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8402/healthz').status != 200)"
CMD ["x402-reseller", "serve", "--host", "0.0.0.0", "--port", "8402"]
