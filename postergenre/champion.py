"""The registry's champion pointer per model, its alias log, and rollback (the half of ``registry`` that moves).

Callers use it through :mod:`postergenre.registry` (``registry.promote``, ``registry.rollback``, ...), which
re-exports this module's API; it lives apart so each module keeps one responsibility.

Champion. ``champion.json`` moves only in :func:`_move_champion`, a compare-and-swap on ``store.put_if``
(create-only when absent, If-Match the etag otherwise) retried on PreconditionFailed with a fresh read and a
re-check of the caller's expectation. The pointer carries a generation that grows by one per move and the log
entry of that move. Log entries are separate immutable objects rather than a list inside the pointer, so the
pointer stays a few hundred bytes however long the history (serving reads it on every model load). An entry
is only ever written from a committed pointer: by the winner right after its CAS, and, create-only, by the
next mover before its own CAS. Hence while the pointer is at generation g, entries 1..g-1 exist and entry g
is in the pointer: the log is gap-free and never holds a move that lost its race.

Rollback. Without ``--to``, a rollback restores the champion that the current champion's latest *promotion*
replaced, skipping any version that was rolled back from since its own last promotion: with promotions
v1 -> v2 -> v3, a first rollback goes to v2 and a second one to v1, never back to v3 (naming it with
``to_version`` still works). The move is conditional on the pointer (version *and* generation) read when the
target was chosen, so of two concurrent rollbacks the second is a no-op (the champion is already where it
wanted it) or is refused with ChampionChanged; it never stacks a second move on the first.

Every file read here is checked for shape; a corrupt one raises CorruptRegistry naming it.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from postergenre.log import get_logger
from postergenre.registry import (
    ANY,
    ChampionChanged,
    ChampionContention,
    Clock,
    CorruptRegistry,
    NoRollbackTarget,
    _Any,
    _dumps,
    _iso,
    _parse_json,
    _read_json,
    _read_record,
    _uri,
    _version_prefix,
    model_key,
    utcnow,
)
from postergenre.storage import NotFound, ObjectStore, PreconditionFailed

log = get_logger(__name__)

_MAX_CAS_ATTEMPTS = 200
ACTIONS = ("promote", "rollback")


def _champion_key(key: str) -> str:
    return f"models/{key}/champion.json"


def _alias_key(key: str, generation: int) -> str:
    return f"models/{key}/aliases/{generation:08d}.json"


# ---------------------------------------------------------------------------------------------- shapes


def entry_problem(entry: Any) -> str | None:
    """Why ``entry`` is not an alias-log entry, or None when it is one."""
    if not isinstance(entry, dict):
        return f"expected an object, found {type(entry).__name__}"
    generation = entry.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
        return f"'generation' must be a positive integer, found {generation!r}"
    if entry.get("action") not in ACTIONS:
        return f"'action' must be one of {', '.join(ACTIONS)}, found {entry.get('action')!r}"
    if not isinstance(entry.get("to_version"), str):
        return "'to_version' must be a version id"
    if entry.get("from_version") is not None and not isinstance(entry["from_version"], str):
        return "'from_version' must be a version id or null"
    if not _is_iso_time(entry.get("time")):
        return "'time' must be an ISO timestamp with a timezone"
    return None


def _is_iso_time(value: Any) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def pointer_problem(pointer: Any) -> str | None:
    """Why ``pointer`` is not a champion pointer (``{version, generation, since, entry}``), or None."""
    if not isinstance(pointer, dict):
        return f"expected an object, found {type(pointer).__name__}"
    for field, kind, what in (
        ("version", str, "a string"),
        ("generation", int, "an integer"),
        ("entry", dict, "an object"),
    ):
        if not isinstance(pointer.get(field), kind) or isinstance(pointer.get(field), bool):
            return f"'{field}' must be {what}"
    if not _is_iso_time(pointer.get("since")):
        return "'since' must be an ISO timestamp with a timezone"
    if problem := entry_problem(pointer["entry"]):
        return f"its entry: {problem}"
    if (pointer["entry"]["generation"], pointer["entry"]["to_version"]) != (
        pointer["generation"],
        pointer["version"],
    ):
        return "its entry does not describe the move to it"
    return None


# ---------------------------------------------------------------------------------------------- reading


def _read_pointer(store: ObjectStore, key: str) -> tuple[dict | None, str | None]:
    try:
        data, etag = store.get_with_etag(_champion_key(key))
    except NotFound:
        return None, None
    where = _uri(store, _champion_key(key))
    pointer = _parse_json(data, where)
    if problem := pointer_problem(pointer):
        raise CorruptRegistry(f"{where}: not a champion pointer: {problem}")
    return pointer, etag


def _read_entry(store: ObjectStore, key: str, generation: int) -> dict:
    where = _uri(store, _alias_key(key, generation))
    try:
        entry = _read_json(store, _alias_key(key, generation))
    except NotFound:
        raise CorruptRegistry(f"{key}: alias log entry {generation} is missing ({where})") from None
    problem = entry_problem(entry)
    if problem is None and entry["generation"] != generation:
        problem = f"it says generation {entry['generation']}"
    if problem:
        raise CorruptRegistry(f"{where}: not alias log entry {generation}: {problem}")
    return entry


def _log_upto(store: ObjectStore, key: str, pointer: dict) -> list[dict]:
    """The alias log as of ``pointer``: entries 1..g-1 are immutable, entry g is the pointer's own."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        entries: Iterator[dict] = pool.map(
            lambda g: _read_entry(store, key, g), range(1, pointer["generation"])
        )
        return [*entries, pointer["entry"]]


# ---------------------------------------------------------------------------------------------- moving


def _write_entry(store: ObjectStore, key: str, entry: dict) -> None:
    """Materialise a committed log entry; create-only, so a second writer of the same entry is harmless."""
    with contextlib.suppress(PreconditionFailed):
        store.put_if(_alias_key(key, entry["generation"]), _dumps(entry), if_match=None)


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))


def _move_champion(
    store: ObjectStore,
    key: str,
    version: str,
    *,
    action: str,
    actor: str,
    reason: str,
    decision: dict | None,
    expected_current: str | None | _Any,
    clock: Clock,
    expected_generation: int | None = None,
) -> dict:
    """The only writer of champion.json: compare-and-swap, retried with a re-read and re-check.

    ``expected_generation`` also pins the move to one pointer state, so a champion that moved away and back
    (A -> B -> A) does not pass for the one the caller read.
    """
    _read_record(store, key, version)  # refuses unregistered versions
    decision_key = _version_prefix(key, version) + "decision.json"
    decision_ref = _uri(store, decision_key) if store.exists(decision_key) else None
    for attempt in range(_MAX_CAS_ATTEMPTS):
        pointer, etag = _read_pointer(store, key)
        current = pointer["version"] if pointer else None
        if current == version:
            return {**pointer, "changed": False}
        if expected_current is not ANY and current != expected_current:
            raise ChampionChanged(f"{key}: champion is {current}, expected {expected_current}")
        generation = pointer["generation"] if pointer else 0
        if expected_generation is not None and generation != expected_generation:
            raise ChampionChanged(
                f"{key}: champion moved meanwhile (generation {generation}, expected {expected_generation})"
            )
        if pointer:
            _write_entry(store, key, pointer["entry"])  # keeps entries 1..g-1 present before g exists
        now = datetime.fromisoformat(_iso(clock()))
        if pointer:  # log times never go backwards, even with skewed clocks
            now = max(now, datetime.fromisoformat(pointer["since"]))
        entry = {
            "generation": generation + 1,
            "action": action,
            "from_version": current,
            "to_version": version,
            "actor": actor,
            "reason": reason,
            "time": _iso(now),
            "decision": decision,
            "decision_ref": decision_ref,
        }
        new = {
            "name": key,
            "version": version,
            "generation": generation + 1,
            "since": entry["time"],
            "entry": entry,
        }
        try:
            store.put_if(_champion_key(key), _dumps(new), if_match=etag)
        except PreconditionFailed:
            _backoff(attempt)
            continue
        _write_entry(store, key, entry)
        log.info(
            "champion moved",
            name=key,
            action=action,
            generation=generation + 1,
            to_version=version,
            from_version=current,
            actor=actor,
        )
        return {**new, "changed": True}
    raise ChampionContention(f"{key}: champion CAS lost {_MAX_CAS_ATTEMPTS} times in a row")


def get_champion(store: ObjectStore, name: str) -> dict | None:
    """The current champion pointer ``{name, version, generation, since, entry}``, or None."""
    return _read_pointer(store, model_key(name))[0]


def promote(
    store: ObjectStore,
    name: str,
    version: str,
    *,
    actor: str,
    reason: str,
    decision: dict | None = None,
    expected_current: str | None | _Any = ANY,
    clock: Clock = utcnow,
) -> dict:
    """Make ``version`` the champion; returns the new pointer plus ``changed``.

    ``expected_current`` (a version id, or None for "no champion yet") makes the move conditional: if the
    champion is something else, ChampionChanged is raised and nothing changes. Promoting the current champion
    is a no-op (``changed: False``), so retried tasks do not add log entries.
    """
    return _move_champion(
        store,
        model_key(name),
        version,
        action="promote",
        actor=actor,
        reason=reason,
        decision=decision,
        expected_current=expected_current,
        clock=clock,
    )


# ---------------------------------------------------------------------------------------------- rollback


def rolled_back_from(entries: list[dict]) -> set[str]:
    """Versions that were rolled back from and not promoted again since."""
    bad: set[str] = set()
    for entry in entries:
        if entry["action"] == "rollback" and entry["from_version"] is not None:
            bad.add(entry["from_version"])
        elif entry["action"] == "promote":
            bad.discard(entry["to_version"])
    return bad


def rollback_target(entries: list[dict]) -> str:
    """Where a rollback without ``to_version`` goes, given the whole alias log (generation 1 first).

    The version the current champion's latest promotion replaced; if that one was rolled back from since,
    the one *its* promotion replaced before that, and so on. Raises NoRollbackTarget when the chain ends.
    """
    current = entries[-1]["to_version"]
    bad, seen = rolled_back_from(entries), {current}
    version, before = current, len(entries)
    while True:
        promotion = next(
            (
                e
                for e in reversed(entries[:before])
                if e["action"] == "promote" and e["to_version"] == version
            ),
            None,
        )
        if promotion is None or promotion["from_version"] is None:
            why = (
                "its promotion replaced nothing"
                if version == current
                else "every earlier one was rolled back"
            )
            raise NoRollbackTarget(f"no version to roll back to from {current} ({why}); name one with --to")
        target = promotion["from_version"]
        if target not in bad and target not in seen:
            return target
        seen.add(target)
        version, before = target, promotion["generation"] - 1


def rollback(
    store: ObjectStore,
    name: str,
    *,
    to_version: str | None = None,
    actor: str,
    reason: str,
    clock: Clock = utcnow,
) -> dict:
    """Move the champion back (see the module docstring for the default target); returns the pointer plus
    ``changed``, and a ``note`` when nothing changed.

    The move is conditional on the pointer read here, so a concurrent move is never rolled back blindly.
    """
    key = model_key(name)
    pointer, _ = _read_pointer(store, key)
    if pointer is None:
        raise NoRollbackTarget(f"{key} has no champion to roll back")
    try:
        target = to_version or rollback_target(_log_upto(store, key, pointer))
    except NoRollbackTarget as exc:
        raise NoRollbackTarget(f"{key}: {exc}") from None
    moved = _move_champion(
        store,
        key,
        target,
        action="rollback",
        actor=actor,
        reason=reason,
        decision=None,
        expected_current=pointer["version"],
        expected_generation=pointer["generation"],
        clock=clock,
    )
    if not moved["changed"]:
        note = (
            f"{target} is already the champion"
            + ("" if moved["generation"] == pointer["generation"] else " (a concurrent move put it there)")
            + "; nothing changed"
        )
        log.warning("rollback changed nothing", name=key, champion=target, note=note)
        moved["note"] = note
    return moved


# ---------------------------------------------------------------------------------------------- history


def history(store: ObjectStore, name: str) -> list[dict]:
    """The alias log, generation 1 first."""
    key = model_key(name)
    pointer, _ = _read_pointer(store, key)
    return [] if pointer is None else _log_upto(store, key, pointer)


def champion_at(store: ObjectStore, name: str, when: datetime) -> str | None:
    """The version that was champion at ``when`` (timezone-aware), or None before the first promotion."""
    instant = datetime.fromisoformat(_iso(when))
    champion = None
    for entry in history(store, name):
        if datetime.fromisoformat(entry["time"]) > instant:
            break
        champion = entry["to_version"]
    return champion
