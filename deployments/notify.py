"""The webhook automation: tell an upload service that a file is done.

Every file ends with a ``fileflow.file.completed`` or ``fileflow.file.failed`` event
(:mod:`fileflow.engine.events`). With ``FILEFLOW_NOTIFY_WEBHOOK_URL`` set, :func:`ensure` saves a
Prefect ``Webhook`` block (``fileflow-notify``) and an automation (``fileflow-notify-webhook``)
whose ``CallWebhook`` action POSTs, for each such event, the JSON of :data:`PAYLOAD`. Without a
URL no automation is created, and an existing one is disabled (so unsetting the URL and
running the setup again turns notifications off). Idempotent: a second run updates the block
and the automation in place.

Both run on the open-source server: its triggers and actions services evaluate automations
(also in Prefect's ephemeral and test servers). Called by :mod:`deployments.setup`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fileflow.engine.events import RESOURCE_PREFIX, TERMINAL
from fileflow.names import NOTIFY_AUTOMATION, NOTIFY_BLOCK


# What the upload service receives: the event's name, id and time, the flow run that finished
# the file, and the event's payload as it was emitted (file id, status, error, manifest ...).
PAYLOAD = (
    '{"event": "{{ event.event }}", "event_id": "{{ event.id }}", "occurred": "{{ event.occurred }}", '
    '"flow_run_id": "{{ event.resource_in_role[\'flow-run\'].id | default(\'\') }}", '
    '"file": {{ event.payload | tojson }}}'
)


class NotifySettings(BaseSettings):
    """Where fileflow sends its terminal events (``FILEFLOW_NOTIFY_*``)."""

    model_config = SettingsConfigDict(env_prefix="FILEFLOW_NOTIFY_", frozen=True)

    webhook_url: str | None = Field(None, description="URL the automation POSTs each terminal event to; unset: off")
    webhook_headers: dict[str, str] = Field(
        default_factory=dict, description='headers sent with it, e.g. {"Authorization": "Bearer ..."} (stored secret)'
    )
    events: tuple[str, ...] = Field(TERMINAL, description="which terminal events are sent (default: both)")


def automation_spec(block_id: Any, settings: NotifySettings, enabled: bool = True):
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=NOTIFY_AUTOMATION,
        description="POST fileflow's terminal file events to FILEFLOW_NOTIFY_WEBHOOK_URL (docs/events.md).",
        enabled=enabled,
        trigger=EventTrigger(
            match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
            expect=set(settings.events),
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[CallWebhook(block_document_id=block_id, payload=PAYLOAD)],
    )


async def ensure(settings: NotifySettings | None = None) -> str:
    """Create, update or disable the automation; what was done: created|updated|disabled|absent."""
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client

    settings = settings or NotifySettings()
    async with get_client() as client:
        existing = await client.read_automations_by_name(NOTIFY_AUTOMATION)
        for extra in existing[1:]:  # a name is not unique in Prefect: keep one
            await client.delete_automation(extra.id)
        current = existing[0] if existing else None
        if not settings.webhook_url:
            if current is None:
                return "absent"
            if current.enabled:
                await client.pause_automation(current.id)
            return "disabled"
        block = Webhook(method="POST", url=SecretStr(settings.webhook_url), headers=settings.webhook_headers)
        block_id = await block.save(NOTIFY_BLOCK, overwrite=True)
        spec = automation_spec(block_id, settings)
        if current is None:
            await client.create_automation(spec)
            return "created"
        await client.update_automation(current.id, spec)
        return "updated"

