"""The deployment files: the compose stack (services, health checks, volumes; ``docker compose config`` where
Docker Compose is installed), the Caddyfile it mounts, and a multi-stage, non-root image."""
from __future__ import annotations

import re
import subprocess

import yaml

from bot.config import PROJECT_DIR

COMPOSE = PROJECT_DIR / "docker-compose.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_the_stack_has_two_web_instances_a_worker_postgres_redis_and_tls() -> None:
    services = compose()["services"]
    assert {"web-1", "web-2", "worker", "postgres", "redis", "caddy"} <= set(services)
    assert services["web-1"]["command"][-2:] == services["web-2"]["command"][-2:] == ["--role", "web"]
    assert services["worker"]["command"][-2:] == ["--role", "worker"]
    for name in ("web-1", "web-2", "worker"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://") and env["REDIS_URL"].startswith("redis://"), name
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert {"80:80", "443:443"} <= set(services["caddy"]["ports"])


def test_every_service_has_a_health_check_and_state_lives_in_volumes() -> None:
    stack = compose()
    for name, service in stack["services"].items():
        assert service["healthcheck"]["test"], name
    assert "/readyz" in " ".join(stack["services"]["web-1"]["healthcheck"]["test"])
    mounts = {name: {volume.split(":")[0] for volume in service.get("volumes", [])} for name, service in stack["services"].items()}
    assert "data" in mounts["web-1"] and "data" in mounts["worker"]
    assert "pgdata" in mounts["postgres"] and "redisdata" in mounts["redis"] and "caddy_data" in mounts["caddy"]
    assert {"data", "pgdata", "redisdata", "caddy_data"} <= set(stack["volumes"])


def test_caddy_proxies_only_the_webhooks_to_both_web_instances() -> None:
    mounted = next(v for v in compose()["services"]["caddy"]["volumes"] if v.endswith("/etc/caddy/Caddyfile:ro"))
    caddyfile = (PROJECT_DIR / mounted.split(":")[0]).read_text(encoding="utf-8")
    assert re.search(r"handle /webhooks/\* \{\s*reverse_proxy web-1:8080 web-2:8080", caddyfile)
    assert "health_uri /readyz" in caddyfile and "respond 404" in caddyfile


def test_docker_compose_accepts_the_file() -> None:
    """``docker compose config`` validates it where Docker Compose is installed (here: PyYAML above only, if not)."""
    try:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return
    if probe.returncode != 0:
        return
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_image_is_multi_stage_non_root_and_small() -> None:
    dockerfile = (PROJECT_DIR / "Dockerfile").read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2 and "COPY --from=build /venv /venv" in dockerfile
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")
    ignored = set((PROJECT_DIR / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", "tests", "data", ".env"} <= ignored
