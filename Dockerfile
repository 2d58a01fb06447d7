FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY smpp ./smpp
COPY routing ./routing
COPY gateway ./gateway
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-cache-dir . && useradd --create-home smsgw
USER smsgw
WORKDIR /home/smsgw

# HTTP API and SMPP server; bind to all interfaces inside the container.
ENV SMSGW_HTTP__LISTEN=0.0.0.0:8080 \
    SMSGW_SMPP__LISTEN=0.0.0.0:2775
EXPOSE 8080 2775
ENTRYPOINT ["smsgw"]
CMD ["serve"]
