"""`python -m services.router`."""

from liaison.core.runner import run_service
from services.router.app import run
from services.router.settings import RouterSettings

run_service("router", RouterSettings, run)
