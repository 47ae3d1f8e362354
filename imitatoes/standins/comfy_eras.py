"""The ComfyUI stand-in as the servers users run today, picked by `Behaviour.era`:

- "0.3.64": the ComfyUI we recorded (history and queue; no Jobs API);
- "jobs": a newer ComfyUI with the Jobs API (`/jobs`, `/jobs/{id}`, `/jobs/{id}/cancel`,
  `/jobs/cancel`), its answers shaped as frontend 1.58.1's zod schemas parse them;
- "cloud": Comfy Cloud as its docs and OpenAPI file describe it: every route under `/api`,
  an `X-API-Key` on each request (`token` on the websocket; 401 without), `/api/user`,
  uploads stored flat and content-addressed (the subfolder ignored), and
  `Behaviour.parallel` prompts running at once.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .comfy_run import QueuedPrompt
    from .comfyui import ComfyStandin

ERAS = ("0.3.64", "jobs", "cloud")
STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
OPEN = ("/imitatoes/", "/api/system_stats")  # the stand-in's own knobs; cloud's public stats


def has_jobs(server: ComfyStandin) -> bool:
    return server.behaviour.era in ("jobs", "cloud")


def refused(server: ComfyStandin, request: web.Request) -> web.Response | None:
    """Cloud: no key, or a wrong one, is a 401; a route outside /api is not there."""
    if server.behaviour.era != "cloud" or request.path.startswith(OPEN):
        return None
    given = request.headers.get("X-API-Key") or request.query.get("token", "")
    if not server.behaviour.api_key or given != server.behaviour.api_key:
        return web.json_response({"code": "unauthorized",
                                  "message": "Invalid or missing API key"}, status=401)
    if request.path != "/ws" and not request.path.startswith("/api/"):
        return web.json_response({"code": "not_found", "message": "not found"}, status=404)
    return None


def flat_name(data: bytes, filename: str) -> str:
    """Cloud's upload name: the content's hash, so the same bytes always get the same name."""
    return hashlib.sha256(data).hexdigest() + (os.path.splitext(filename)[1] or ".png")


def job(server: ComfyStandin, prompt_id: str, detail: bool) -> dict[str, Any] | None:
    """A job as `GET /jobs` (or, with detail, `GET /jobs/{id}`) answers; None if unknown."""
    with server._lock:
        queued = next((j for j in server._pending if j.prompt_id == prompt_id), None)
        running = server._running.get(prompt_id)
        entry = server.history.get(prompt_id)
        cancelled = server.cancelled.get(prompt_id)
    if queued or running:
        return _entry(queued or running, "pending" if queued else "in_progress", None, detail)
    if cancelled is not None:
        return _entry(cancelled, "cancelled", None, detail)
    if entry is None:
        return None
    return _entry(server.jobs_seen[prompt_id], _finished_status(entry), entry, detail)


def _finished_status(entry: dict[str, Any]) -> str:
    messages = [m[0] for m in entry["status"]["messages"]]
    if "execution_interrupted" in messages:
        return "cancelled"
    return "completed" if entry["status"]["status_str"] == "success" else "failed"


def _entry(queued: QueuedPrompt, status: str, history: dict[str, Any] | None,
           detail: bool) -> dict[str, Any]:
    messages = {kind: data for kind, data in (history or {}).get("status", {}).get("messages", [])}
    outputs = (history or {}).get("outputs") or {}
    error = messages.get("execution_error")
    images = [dict(img, nodeId=node, mediaType="images") for node, out in outputs.items()
              for img in out.get("images", [])]
    out: dict[str, Any] = {
        "id": queued.prompt_id, "status": status, "create_time": int(queued.created * 1000),
        "execution_start_time": int(queued.started * 1000) if queued.started else None,
        "execution_end_time": messages.get("execution_success", messages.get(
            "execution_error", messages.get("execution_interrupted", {}))).get("timestamp"),
        "preview_output": images[0] if images else None,
        "outputs_count": sum(len(o.get("images", [])) for o in outputs.values())
        if history else None,
        "previewable_outputs_count": len(images) if history else None,
        "execution_error": {k: error[k] for k in (
            "prompt_id", "timestamp", "node_id", "node_type", "executed", "exception_message",
            "exception_type", "traceback", "current_inputs", "current_outputs") if k in error}
        if error else None,
        "workflow_id": None, "priority": queued.number}
    if detail:
        out.update(outputs=outputs, workflow={"prompt": queued.prompt},
                   update_time=out["execution_end_time"] or out["create_time"])
    return out


async def list_jobs(server: ComfyStandin, request: web.Request) -> web.Response:
    if not has_jobs(server):
        raise web.HTTPNotFound()
    wanted = set((request.query.get("status") or ",".join(STATUSES)).split(","))
    limit = max(1, min(int(request.query.get("limit", 100)), 1000))
    offset = max(0, int(request.query.get("offset", 0)))
    with server._lock:
        ids = [*reversed(server.jobs_seen)]  # newest first, as create_time desc
    jobs = [j for j in (job(server, i, False) for i in ids) if j and j["status"] in wanted]
    return web.json_response({"jobs": jobs[offset:offset + limit], "pagination": {
        "offset": offset, "limit": limit, "total": len(jobs),
        "has_more": offset + limit < len(jobs)}})


async def get_job(server: ComfyStandin, request: web.Request) -> web.Response:
    if not has_jobs(server):
        raise web.HTTPNotFound()
    found = job(server, request.match_info["job_id"], True)
    if found is None:
        return web.json_response({"code": "not_found", "message": "Job not found"}, status=404)
    return web.json_response(found)


async def cancel_one(server: ComfyStandin, request: web.Request) -> web.Response:
    if not has_jobs(server):
        raise web.HTTPNotFound()
    cancel(server, [request.match_info["job_id"]])
    return web.Response()


async def cancel_many(server: ComfyStandin, request: web.Request) -> web.Response:
    if not has_jobs(server):
        raise web.HTTPNotFound()
    body = await request.json()
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
        return web.json_response({"code": "invalid", "message": "job_ids: 1 to 100"}, status=400)
    return web.json_response({"cancelled": cancel(server, [str(i) for i in ids])})


def cancel(server: ComfyStandin, ids: list[str]) -> list[str]:
    """Take pending jobs off the queue and stop running ones; the ids it cancelled."""
    done = []
    with server._lock:
        for queued in [j for j in server._pending if j.prompt_id in ids]:
            server._pending.remove(queued)
            server.cancelled[queued.prompt_id] = queued
            done.append(queued.prompt_id)
        for running in server._running.values():
            if running.prompt_id in ids:
                running.stop.set()
                done.append(running.prompt_id)
    return done


async def user(server: ComfyStandin, request: web.Request) -> web.Response:
    if server.behaviour.era != "cloud":
        raise web.HTTPNotFound()
    return web.json_response({"status": "active"})
