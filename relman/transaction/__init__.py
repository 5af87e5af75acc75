"""Deploy, rollback, restart and recovery as journaled transactions: the one package that
joins the release store and the supervisor."""

from relman.transaction import hostside, prepare
from relman.transaction.app import App, Report
from relman.transaction.recovery import CrashRecovery, reconcile
from relman.transaction.status import Observer

__all__ = ["App", "CrashRecovery", "Observer", "Report", "hostside", "prepare", "reconcile"]
