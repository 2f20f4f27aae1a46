"""`python -m services.delegations`."""

from liaison.core.runner import run_service
from services.delegations.app import run
from services.delegations.settings import DelegationsSettings

if __name__ == "__main__":
    run_service("delegations", DelegationsSettings, run)
