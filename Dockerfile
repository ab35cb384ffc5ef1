# optobot: the bot, its webhooks and workers in one process (`optobot run`).
FROM python:3.11-slim

# WeasyPrint's system libraries and a Cyrillic font for the PDF catalogue.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY broadcasts ./broadcasts
COPY bench ./bench
COPY catalog_templates ./catalog_templates
COPY samples ./samples
RUN pip install --no-cache-dir . && mkdir /data && chown nobody /data

ENV CATALOG_DIR=/app/samples/clothing \
    QUIZ_CONFIG=/app/samples/clothing/quiz.yaml \
    DATA_DIR=/data \
    MPLCONFIGDIR=/data/matplotlib \
    DATABASE_URL=sqlite+aiosqlite:////data/optobot.sqlite3 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080
VOLUME ["/data"]
EXPOSE 8080
USER nobody
CMD ["optobot", "run"]
