"""What a signalling message may carry (issue 6): session descriptions, ICE candidates and
simple-peer's signal objects, each checked for shape and size and then passed on unchanged;
and what the call page adds (issue 16): the names people give, and their camera and
microphone state.

Each rule raises :class:`switchboard.errors.InputError` with a code a program can test.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from switchboard.errors import InputError
from switchboard.validation import display_name

#: Limits from the issue: an SDP of at most 64 KiB, a candidate line of at most 1 KiB.
MAX_SDP = 64 * 1024
MAX_CANDIDATE = 1024
MAX_PEER_ID = 64
DESCRIPTION_TYPES = ("offer", "answer", "pranswer", "rollback")
MEDIA_KINDS = ("audio", "video")


def person_name(value: Any) -> str:
    """A name people see in a call room: the rules every display name follows (switchboard's
    ``display_name``); uniqueness in the room is the roster's job."""
    return display_name(value)


def name_key(name: str) -> str:
    """What two names must differ in to be two people: their NFKC case folding, so that 'Ann',
    'ANN' and 'ann' in full-width letters are one name. (Chat also folds look-alike letters
    with ICU's confusable skeletons; signalling depends neither on ICU nor on chat.)"""
    return unicodedata.normalize("NFKC", name.casefold())


def media(value: Any) -> dict[str, bool]:
    """A caller's camera and microphone state: ``{"audio": bool, "video": bool}``, exactly."""
    if not isinstance(value, dict) or set(value) != {"audio", "video"}:
        raise InputError("bad_media", "A media state is an object {audio, video}.")
    if not all(isinstance(value[kind], bool) for kind in MEDIA_KINDS):
        raise InputError("bad_media", "audio and video are true or false.")
    return {"audio": value["audio"], "video": value["video"]}


def peer_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PEER_ID:
        raise InputError("bad_peer_id", f"A peer id is a string of 1 to {MAX_PEER_ID} characters.")
    return value


def _keys(value: dict[str, Any], allowed: set[str], what: str, code: str = "bad_signal") -> None:
    unknown = set(value) - allowed
    if unknown:
        raise InputError(code, f"{what} has unknown fields: {', '.join(sorted(unknown))}.")


def description(value: Any, types: tuple[str, ...] = DESCRIPTION_TYPES) -> dict[str, Any]:
    """An RTCSessionDescriptionInit: ``{"type", "sdp"}``."""
    if not isinstance(value, dict):
        raise InputError("bad_description", "A description is an object {type, sdp}.")
    _keys(value, {"type", "sdp"}, "A description", "bad_description")
    if value.get("type") not in types:
        raise InputError("bad_description", f"A description's type is one of {', '.join(types)}.")
    sdp = value.get("sdp", "")
    if not isinstance(sdp, str):
        raise InputError("bad_description", "A description's sdp is a string.")
    if len(sdp.encode()) > MAX_SDP:
        raise InputError("too_large", f"An SDP has at most {MAX_SDP // 1024} KiB.")
    if value["type"] in ("offer", "answer", "pranswer") and not sdp.startswith("v=0"):
        raise InputError("bad_description", "An offer or answer needs an SDP starting with v=0.")
    return value


def candidate(value: Any) -> dict[str, Any] | None:
    """An RTCIceCandidateInit (``{"candidate", "sdpMid", "sdpMLineIndex",
    "usernameFragment"}``), or null: the end of the candidates."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError("bad_candidate", "A candidate is an object {candidate, sdpMid, ...}.")
    fields = {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}
    _keys(value, fields, "A candidate", "bad_candidate")
    line = value.get("candidate")
    if not isinstance(line, str):
        raise InputError("bad_candidate", "A candidate's candidate is a string.")
    if len(line.encode()) > MAX_CANDIDATE:
        raise InputError("too_large", f"A candidate has at most {MAX_CANDIDATE} bytes.")
    if line and not line.removeprefix("a=").startswith("candidate:"):
        raise InputError("bad_candidate", "A candidate line starts with candidate:.")
    mid, index = value.get("sdpMid"), value.get("sdpMLineIndex")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 64):
        raise InputError("bad_candidate", "sdpMid is a short string or null.")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise InputError("bad_candidate", "sdpMLineIndex is a number from 0, or null.")
    fragment = value.get("usernameFragment")
    if fragment is not None and (not isinstance(fragment, str) or len(fragment) > 256):
        raise InputError("bad_candidate", "usernameFragment is a short string or null.")
    return value


def signal(value: Any) -> dict[str, Any]:
    """One of simple-peer's signal objects: a description, ``{"type": "candidate",
    "candidate"}``, ``{"renegotiate": true}`` or ``{"transceiverRequest": {"kind", "init"}}``."""
    if not isinstance(value, dict):
        raise InputError("bad_signal", "A signal is an object, as simple-peer makes them.")
    if value.get("type") == "candidate":
        _keys(value, {"type", "candidate"}, "A candidate signal")
        if value.get("candidate") is None:
            raise InputError("bad_candidate", "A candidate signal carries a candidate.")
        candidate(value["candidate"])
        return value
    if "type" in value:
        return description(value)
    if "renegotiate" in value:
        _keys(value, {"renegotiate"}, "A renegotiate signal")
        if value["renegotiate"] is not True:
            raise InputError("bad_signal", "renegotiate is true.")
        return value
    if "transceiverRequest" in value:
        _keys(value, {"transceiverRequest"}, "A transceiver request")
        request = value["transceiverRequest"]
        if not isinstance(request, dict) or request.get("kind") not in MEDIA_KINDS:
            raise InputError("bad_signal", "A transceiver request has a kind: audio or video.")
        _keys(request, {"kind", "init"}, "A transceiver request")
        if not isinstance(request.get("init", {}), dict):
            raise InputError("bad_signal", "A transceiver request's init is an object.")
        return value
    raise InputError(
        "bad_signal",
        "A signal is a description, a candidate, a renegotiate or a transceiver request.",
    )
