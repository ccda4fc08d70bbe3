"""The global webhook: retired as a Prefect automation, now sent through the callback outbox.

Until issue 17 an automation (``fileflow-notify-webhook``) with a ``CallWebhook`` action POSTed
each terminal event once, unsigned and never retried. Now the mediator puts every terminal
event in the callback outbox (:func:`fileflow.engine.events.enqueue_webhook`) and the
deliverer POSTs it, signed and retried (docs/callbacks.md). :func:`ensure`, run by
:mod:`deployments.setup`, only pauses an automation left by an older setup, so a server
upgraded in place does not send every event twice. The URL, headers and events are
:class:`fileflow.settings.NotifySettings` (``FILEFLOW_NOTIFY_*``), read by the mediator and
the deliverer.
"""

from __future__ import annotations

from fileflow.names import NOTIFY_AUTOMATION
from fileflow.settings import NotifySettings

__all__ = ["NotifySettings", "ensure"]


async def ensure() -> str:
    """Pause the automation of an older setup: ``disabled`` if one was running, else ``absent``."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        existing = await client.read_automations_by_name(NOTIFY_AUTOMATION)
        running = [a for a in existing if a.enabled]
        for automation in running:
            await client.pause_automation(automation.id)
    return "disabled" if running else "absent"
