"""Chat turns in the two shapes datasets use: ShareGPT ``{from, value}`` and OpenAI ``{role, content}``.

Tool use is kept as turns. ShareGPT (LLaMA-Factory) writes a call as a ``function_call`` turn whose value is
``{"name": ..., "arguments": {...}}`` (a list for parallel calls) and a result as an ``observation`` turn;
OpenAI writes an assistant turn with ``tool_calls`` and a ``tool`` turn (legacy: ``function_call`` and a
``function`` turn). A record holds the OpenAI shape: ``tool_calls`` with JSON-text arguments, ``content`` ""
when the turn only calls. Other keys of a turn (``weight``, ``tool_call_id``, ...) are kept as they are.
"""

from __future__ import annotations

import json
from typing import Any

from dataflywheel.records import RecordError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system",
                  "function_call": "assistant", "observation": "tool", "tool": "tool"}
SHAREGPT_NAMES = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}


def _arguments_text(arguments: Any) -> str:
    """Tool-call arguments as JSON text, as OpenAI sends them (some datasets store an object)."""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)


def _call(name: Any, arguments: Any, where: str) -> dict:
    if not isinstance(name, str):
        raise RecordError(f"{where}: a tool call needs a string 'name'")
    return {"type": "function", "function": {"name": name, "arguments": _arguments_text(arguments)}}


def _calls_from_value(value: Any, where: str) -> list[dict]:
    """The calls of a ShareGPT ``function_call`` value (JSON text of one call or a list of calls)."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as err:
        raise RecordError(f"{where} (function_call) must be JSON {{name, arguments}}: {err.msg}") from err
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls or not all(isinstance(c, dict) for c in calls):
        raise RecordError(f"{where} (function_call) must be a JSON object {{name, arguments}} or a list of them")
    return [_call(c.get("name"), c.get("arguments"), where) for c in calls]


def _from_sharegpt_turn(turn: dict, where: str) -> dict:
    if "value" not in turn:
        raise RecordError(f"{where} has 'from' but no 'value'")
    speaker, value = turn["from"], turn["value"]
    role = SHAREGPT_ROLES.get(speaker)
    if role is None:
        raise RecordError(f"{where} has unknown speaker {speaker!r}; expected one of {', '.join(SHAREGPT_ROLES)}")
    extra = {k: v for k, v in turn.items() if k not in ("from", "value")}
    if speaker == "function_call":
        return {"role": role, "content": "", "tool_calls": _calls_from_value(value, where), **extra}
    return {"role": role, "content": value, **extra}


def _from_openai_turn(turn: dict, where: str) -> dict:
    message = dict(turn)
    if message.get("role") == "function":  # legacy OpenAI: a function's result
        message["role"] = "tool"
    legacy = message.pop("function_call", None)
    if legacy is not None:
        if not isinstance(legacy, dict):
            raise RecordError(f"{where}.function_call must be an object {{name, arguments}}")
        message["tool_calls"] = [_call(legacy.get("name"), legacy.get("arguments"), where)]
    if "tool_calls" in message and message["tool_calls"] in (None, []):  # exports write null or [] for no call
        del message["tool_calls"]
    if isinstance(message.get("tool_calls"), list):
        message["tool_calls"] = [_openai_call(c) for c in message["tool_calls"]]
    if message.get("content") is None and message.get("tool_calls"):
        message["content"] = ""
    return message


def _openai_call(call: Any) -> Any:
    """An OpenAI tool call with JSON-text arguments (the record's check names any other flaw)."""
    function = call.get("function") if isinstance(call, dict) else None
    if isinstance(function, dict) and not isinstance(function.get("arguments"), str):
        return {**call, "function": {**function, "arguments": _arguments_text(function.get("arguments"))}}
    return call


def message_from_turn(turn: Any, where: str) -> dict:
    """One turn of either shape as a record message (validated later with the record)."""
    if isinstance(turn, dict) and "from" in turn:
        return _from_sharegpt_turn(turn, where)
    if isinstance(turn, dict) and "role" in turn:
        return _from_openai_turn(turn, where)
    raise RecordError(f"{where} must be an object with 'from' and 'value' (ShareGPT) or 'role' and 'content' (OpenAI)")


def messages_from_turns(value: Any, field: str) -> list[dict]:
    if not isinstance(value, list):
        hint = f"; if it holds the prompt as text, map it: --fields prompt={field}" if isinstance(value, str) else ""
        raise RecordError(f"field {field!r} must be a list of chat turns, got {type(value).__name__}{hint}")
    return [message_from_turn(turn, f"{field}[{i}]") for i, turn in enumerate(value)]


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def sharegpt_turn(message: dict, where: str) -> dict:
    """A record message as a ShareGPT turn (LLaMA-Factory's tags for tool calls and results)."""
    extra = {k: v for k, v in message.items() if k not in ("role", "content", "tool_calls")}
    if message.get("tool_calls"):
        if message["content"]:
            raise RecordError(f"{where} has both text and tool calls, which a ShareGPT turn cannot hold; "
                              "write 'messages' instead")
        calls = [{"name": c["function"]["name"], "arguments": _arguments(c["function"]["arguments"])}
                 for c in message["tool_calls"]]
        value = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
        return {"from": "function_call", "value": value, **extra}
    return {"from": SHAREGPT_NAMES[message["role"]], "value": message["content"], **extra}
