# tvflux service image (used by compose.yaml). The frontend's npm packages are fetched in
# a Node stage; the service runs from its source tree (editable install) because it
# serves frontend/ relative to the package.
FROM node:20-slim AS frontend
WORKDIR /app/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY loadgen ./loadgen
COPY flux ./flux
COPY frontend ./frontend
COPY --from=frontend /app/frontend/node_modules ./frontend/node_modules
RUN pip install -e . \
    && useradd --create-home --uid 10001 tvflux \
    && mkdir -p /data && chown tvflux /data
USER tvflux
ENV TVFLUX_HOST=0.0.0.0 TVFLUX_DATA_DIR=/data
EXPOSE 8000
CMD ["tvflux", "serve"]
