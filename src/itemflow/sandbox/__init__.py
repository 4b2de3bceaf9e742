"""Run automation code in a sandbox. Knows nothing of the database or the HTTP API.

``LocalSandbox`` runs code on this machine (bubblewrap + seccomp + rlimits, a pool of warm
zygotes); ``RemoteSandbox`` sends it to the private code-runner service (``runner.py``).
"""

from itemflow.sandbox.base import Limits, Sandbox, SandboxResult, SandboxUnavailable
from itemflow.sandbox.local import LocalSandbox
from itemflow.sandbox.remote import RemoteSandbox

__all__ = ["Limits", "LocalSandbox", "RemoteSandbox", "Sandbox", "SandboxResult", "SandboxUnavailable"]
