"""`python -m services.registry`: load the settings and serve until SIGINT/SIGTERM."""

from liaison.core.runner import run_service
from services.registry.app import run
from services.registry.settings import RegistrySettings

if __name__ == "__main__":
    run_service("registry", RegistrySettings, run)
