"""Failure (and optionally success) alerts to a webhook: Slack-compatible or generic JSON.

An alert never changes the step's outcome: delivery problems come back as one
note for the log.  Each alert gets a short timeout and two retries (network
errors, timeouts, HTTP 429 and 5xx); other HTTP errors are not retried, because
sending the same request again will not fix a wrong URL.

What is alerted:

* a failed command that did work (exit codes 3-9: backup, deploy, record, prune,
  off-site, restore, verify, the lock; 10 and 11), and an internal error (exit 70: a
  relstep bug stopped the command, so whatever it was doing did not happen); not bad
  input (exit 2: nothing ran, and the CI log says so);
* an interrupted command that changes or checks backups (SIGINT 130, SIGTERM 143:
  a cancelled CI job, a shutdown, Ctrl-C): it did not finish, a deploy may be half
  done, and for the heartbeat an interrupted run is a failed run (``/fail``);
* a failed optional off-site copy (the step passes, the alert says so);
* with ``on: [failure, success]``, every successful ``relstep run``.

The webhook URL is a secret (Slack's carry a token): it is registered for masking
and never appears in a message.  The whole request body passes through
``relstep.masking.mask_data`` before it is sent.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from relstep.config import Config, NotifyConfig
from relstep.masking import mask_data, mask_text, register_secret

TIMEOUT = float(os.environ.get("RELSTEP_NOTIFY_TIMEOUT", "5"))
RETRIES = 2
BACKOFF = (0.5, 1.5)
# 3-9: a phase failed; 10: a restore stopped by sessions in the way; 11: `relstep status` found the
# backups unhealthy; 70: an internal error (a bug stopped the command: it failed all the same).
ALERTED_EXIT_CODES = frozenset({*range(3, 12), 70})
# 130 (SIGINT), 143 (SIGTERM): alerted for these commands only; Ctrl-C on `relstep list` is nobody's news.
INTERRUPTION_EXIT_CODES = frozenset({130, 143})
INTERRUPTION_ALERTED_COMMANDS = ("run", "backup", "record", "prune", "offsite", "restore", "verify", "status")
PINGED_COMMANDS = ("run", "verify", "status")


def alerted(exit_code: int, command: str | None) -> bool:
    """Whether a command (or phase) that ended with ``exit_code`` is alerted."""
    if exit_code in INTERRUPTION_EXIT_CODES:   # a restore that a signal stopped ends this way too
        return command in INTERRUPTION_ALERTED_COMMANDS
    return exit_code in ALERTED_EXIT_CODES


@dataclass(frozen=True)
class Event:
    event: str                      # "failure", "warning" (failed but the step passed) or "success"
    project: str
    version: str | None
    phase: str | None
    reason: str | None
    host: str
    exit_code: int
    snapshot: str | None = None
    deployment_type: str | None = None
    time: str = ""


def project_name(config: Config, environ: Any = None) -> str:
    """notify.project, else the CI's repository path, else the project folder's name."""
    environ = os.environ if environ is None else environ
    if config.notify and config.notify.project:
        return config.notify.project
    return environ.get("GITHUB_REPOSITORY") or environ.get("CI_PROJECT_PATH") or config.base_dir.name


def make_event(config: Config, event: str, *, version: str | None, phase: str | None, reason: str | None,
               exit_code: int, snapshot: str | None = None, deployment_type: str | None = None) -> Event:
    return Event(
        event=event, project=project_name(config), version=version, phase=phase,
        reason=mask_text(reason) if reason else reason, host=socket.gethostname(), exit_code=exit_code,
        snapshot=snapshot, deployment_type=deployment_type,
        time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def body(event: Event, fmt: str) -> dict[str, Any]:
    """The request body: Slack's ``text`` + ``attachments``, or the event itself as JSON."""
    if fmt == "json":
        return {"source": "relstep", **asdict(event)}
    version = event.version or "(no version)"
    if event.event == "success":
        text = f"relstep: {event.project} {version} backed up and recorded on {event.host}"
        color = "good"
    else:
        passed = " (optional; the step passed)" if event.event == "warning" else ""
        text = f"relstep: {event.phase} failed{passed} for {event.project} {version} on {event.host}: {event.reason}"
        color = "warning" if event.event == "warning" else "danger"
    fields = [("project", event.project), ("version", version), ("phase", event.phase), ("host", event.host),
              ("exit code", str(event.exit_code)), ("reason", event.reason), ("snapshot", event.snapshot)]
    return {
        "text": text,
        "attachments": [{
            "color": color, "fallback": text,
            "fields": [{"title": t, "value": v, "short": t not in ("reason", "snapshot")} for t, v in fields if v],
        }],
    }


def send(settings: NotifyConfig, event: Event, *, timeout: float | None = None,
         sleep: Callable[[float], None] = time.sleep) -> str | None:
    """POST the event; None when delivered, else one sentence saying why not (for a note)."""
    import urllib.error
    import urllib.request

    assert settings.webhook is not None
    register_secret(settings.webhook)
    # Every field is masked, not only the reason: a version, snapshot path or project name
    # may carry a URL or a key too, and an alert leaves the machine.
    data = json.dumps(mask_data(body(event, settings.format))).encode()
    timeout = TIMEOUT if timeout is None else timeout
    problem = ""
    for attempt in range(RETRIES + 1):
        if attempt:
            sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
        request = urllib.request.Request(  # noqa: S310 - config allows only http(s) webhooks
            settings.webhook, data=data, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "relstep"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                response.read(65536)
            return None
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
            if exc.code != 429 and exc.code < 500:
                break
        except TimeoutError:
            problem = f"no answer within {timeout:g} s"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            problem = "timed out" if isinstance(reason, TimeoutError) else str(reason)
    attempts = attempt + 1
    return mask_text(f"the {event.event} alert was not delivered to notify.webhook ({problem}"
                     f" after {attempts} attempt{'s' if attempts > 1 else ''}); the exit code is unchanged")


def ping(config: Config | None, ok: bool, *, timeout: float | None = None) -> list[str]:
    """The heartbeat (``notify.ping_url``): ``<url>`` on success, ``<url>/fail`` on failure.

    Healthchecks-style: the service alerts when pings stop, so a machine that no longer runs
    relstep at all is noticed too.  One GET, no retries (the next scheduled run pings again);
    a failure is a note, the exit code is unchanged.  The URL carries the check's key: masked.
    A POST with an empty body: Healthchecks takes GET, HEAD and POST alike, and a POST is
    never answered from a cache on the way.
    """
    if config is None or config.notify is None or not config.notify.ping_url:
        return []
    import urllib.error
    import urllib.request

    url = config.notify.ping_url + ("" if ok else "/fail")
    register_secret(config.notify.ping_url)
    try:
        request = urllib.request.Request(url, data=b"", method="POST",  # noqa: S310 - http(s) only
                                         headers={"User-Agent": "relstep"})
        with urllib.request.urlopen(request, timeout=TIMEOUT if timeout is None else timeout) as response:  # noqa: S310
            response.read(65536)
    except urllib.error.HTTPError as exc:
        return [f"the heartbeat to notify.ping_url failed (HTTP {exc.code}); the exit code is unchanged"]
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return [mask_text(f"the heartbeat to notify.ping_url failed ({reason}); the exit code is unchanged")]
    return []


def _deliver(config: Config, event: Event) -> list[str]:
    assert config.notify is not None
    if not config.notify.webhook:
        return []
    wanted = "success" if event.event == "success" else "failure"
    if wanted not in config.notify.on:
        return []
    problem = send(config.notify, event)
    return [problem] if problem else []


def after_run(config: Config | None, result: Any, *, success_alert: bool = True) -> list[str]:
    """Alerts a RunResult calls for; returns notes about alerts that could not be delivered."""
    if config is None or config.notify is None:
        return []
    common = {"version": result.version, "snapshot": result.snapshot, "deployment_type": result.deployment_type}
    if result.exit_code:
        if not alerted(result.exit_code, result.failed_phase):
            return []
        return _deliver(config, make_event(config, "failure", phase=result.failed_phase, reason=result.error,
                                           exit_code=result.exit_code, **common))
    notes: list[str] = []
    for phase in result.phases:
        if not phase.ok:   # failed but optional: the step passed
            notes += _deliver(config, make_event(config, "warning", phase=phase.name, reason=phase.detail,
                                                 exit_code=0, **common))
    if success_alert:
        notes += _deliver(config, make_event(config, "success", phase=None, reason=None, exit_code=0, **common))
    return notes


def after_failure(config: Config | None, phase: str, reason: str, exit_code: int,
                  version: str | None = None) -> list[str]:
    """The alert for a command that failed with an exception (record, prune, restore, verify...)."""
    if config is None or config.notify is None or not alerted(exit_code, phase):
        return []
    return _deliver(config, make_event(config, "failure", version=version, phase=phase, reason=reason,
                                       exit_code=exit_code))


def after_interruption(config: Config | None, command: str, exit_code: int, signame: str) -> list[str]:
    """The alert and the ``/fail`` heartbeat for a command a signal stopped; notes as for the others.

    Best effort: a second signal while they are sent abandons them (the first one asked to stop).
    """
    if config is None or config.notify is None:
        return []
    from relstep.errors import Terminated

    notes: list[str] = []
    try:
        if alerted(exit_code, command):
            notes += _deliver(config, make_event(config, "failure", version=None, phase=command,
                                                 reason=f"interrupted by {signame}; the command did not finish",
                                                 exit_code=exit_code))
        if command in PINGED_COMMANDS:
            notes += ping(config, ok=False)
    except (KeyboardInterrupt, Terminated):
        notes.append("a second signal stopped the alert for the interruption")
    return notes
