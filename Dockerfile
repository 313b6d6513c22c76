# syntax=docker/dockerfile:1
# One image runs the gateway (default CMD) and the mock upstream services
# (`python -m services users|products|orders ...`, as docker-compose.yml does).

# --- builder: resolve and install the project and its dependencies into a venv ----------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# gcc: the wheel compiles the engine's modules with mypyc (setup.py). Only this stage has it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# Dependencies change less often than code: install them from pyproject alone first so the
# layer is cached across code edits. Every dependency (uvloop, httptools, hiredis, lupa)
# ships manylinux wheels.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY setup.py mypyc.ini ./
COPY gateway/ gateway/
COPY services/ services/
# The Redis scripts ship inside the package (pyproject maps lua/ to gateway.lua).
COPY lua/ lua/
# A regular (non-editable) install, the engine compiled: the runtime stage copies only /opt/venv.
RUN pip install --no-deps .

# --- runtime: slim base, the venv (the package carries its Lua scripts), non-root ----------
FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin gateway

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The package, with its Lua scripts, is installed in the venv. README.md travels with the image
# for `docker run ... cat`.
COPY README.md pyproject.toml /app/

USER 10001:10001
EXPOSE 8000

# No curl in slim: probe with the interpreter already in the image. /health answers 200 while
# the process is alive; readiness (/ready) is for load balancers and Kubernetes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

# The gateway drains in-flight requests on SIGTERM, then exits 0. Exec-form CMD makes the
# gateway PID 1's only process, so it receives the signal itself.
STOPSIGNAL SIGTERM
CMD ["gateway", "run", "--host", "0.0.0.0", "--port", "8000"]
