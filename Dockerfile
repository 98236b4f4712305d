FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements/deploy.txt ./requirements/deploy.txt
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/deploy.txt
COPY producer ./producer
COPY consumer ./consumer
COPY shared ./shared
RUN pip install --no-cache-dir --no-deps .
ENV HOST=0.0.0.0 PORT=1111
EXPOSE 1111
CMD ["redis-archive", "serve", "--host", "0.0.0.0", "--port", "1111"]
