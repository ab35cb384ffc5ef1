# optobot: `optobot run --role web|worker|all` (see README "Production"). Two stages: the build tools and
# pip's caches stay in the first; the image holds the virtualenv, WeasyPrint's libraries and the code.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY broadcasts ./broadcasts
COPY bench ./bench
RUN /venv/bin/pip install .

FROM python:3.11-slim
# WeasyPrint's system libraries and a Cyrillic font for the PDF catalogue.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --no-create-home optobot \
 && mkdir /data && chown optobot /data
COPY --from=build /venv /venv
COPY catalog_templates /app/catalog_templates
COPY samples /app/samples
# the renderer finds the default template next to the installed package (bot/catalog/render.py: TEMPLATES_DIR)
RUN ln -s /app/catalog_templates "$(/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/catalog_templates"
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CATALOG_DIR=/app/samples/clothing \
    QUIZ_CONFIG=/app/samples/clothing/quiz.yaml \
    DATA_DIR=/data \
    MPLCONFIGDIR=/data/matplotlib \
    DATABASE_URL=sqlite+aiosqlite:////data/optobot.sqlite3 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
USER optobot
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["optobot", "run"]
