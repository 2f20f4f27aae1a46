"""`python -m services.deadlines`."""

from liaison.core.runner import run_service
from services.deadlines.app import run
from services.deadlines.settings import DeadlinesSettings

if __name__ == "__main__":
    run_service("deadlines", DeadlinesSettings, run)
